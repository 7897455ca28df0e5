*** Settings ***
Documentation       Subscribe To Topic with shards=: a subscription received by several processes (Ray actors), its
...                 figures merged whenever a keyword reads them.
Resource            ../acceptance.resource

Suite Setup         Start Acceptance Environment
Suite Teardown      Stop Acceptance Environment


*** Test Cases ***
A Sharded Subscription Counts Every Message Of A Fleet Once
    [Documentation]    Two receivers share the subscription; the check sees every message, none twice.
    Connect To MQTT Broker    ${BROKER}[host]    ${BROKER}[port]    alias=sharded
    Subscribe To Topic    iotix/acceptance-sensor/+/telemetry    qos=1    alias=sharded    shards=2
    ${fleet} =    Create Local Fleet    acceptance-sensor    count=50    name=sharded-env
    Start Fleet    ${fleet}
    Sleep    2s
    ${report} =    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=5    source=sharded
    Should Be Equal As Integers    ${report}[duplicates]    0
    ${messages} =    Wait Until Messages Received    iotix/acceptance-sensor/+/telemetry    count=250    alias=sharded
    Should Be Empty    ${messages}
    Loss Should Be Below    ${fleet}    1    source=sharded
    [Teardown]    Delete Fleets And Disconnect    sharded

A Sharded Fleet Is Checked At A Sharded Subscription
    [Documentation]    Both sides in several processes; every message counted once, latencies per fleet.
    Connect To MQTT Broker    ${BROKER}[host]    ${BROKER}[port]    alias=both
    Subscribe To Topic    iotix/acceptance-sensor/+/telemetry    qos=1    alias=both    shards=2
    ${fleet} =    Create Local Fleet    acceptance-sensor    count=60    name=both-env    shards=2
    Start Fleet    ${fleet}
    Sleep    2s
    ${report} =    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=5    source=both
    Should Be Equal As Integers    ${report}[duplicates]    0
    Should Be Equal As Integers    ${report}[latencyMs][count]    ${report}[received]
    Latency Should Be Below    ${fleet}    1s    source=both
    [Teardown]    Delete Fleets And Disconnect    both

Messages Of A Sharded Subscription Are Not Kept
    [Documentation]    Get Received Messages fails and says what to use instead.
    Connect To MQTT Broker    ${BROKER}[host]    ${BROKER}[port]    alias=counted
    Subscribe To Topic    iotix/counted/#    alias=counted    shards=2
    Run Keyword And Expect Error    *sharded subscription, which counts and tracks messages but does not keep them*
    ...    Get Received Messages    iotix/counted/#    alias=counted
    [Teardown]    Disconnect From MQTT Broker    counted
