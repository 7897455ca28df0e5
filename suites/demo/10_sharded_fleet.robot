*** Settings ***
Documentation       One fleet larger than one process needs: 3,000 environmental sensors split over 3 shards (each
...                 a process of its own on a local Ray, started on demand) and launched on one timeline, checked
...                 by a subscription shared by 2 receiver processes. Every keyword acts on the whole fleet: the
...                 stats add up over the shards, and every reading of every device must arrive exactly once.
Resource            ../../resources/iotix.resource

Suite Setup         Start Local Test Environment
Test Teardown       Delete All Fleets


*** Variables ***
${DEVICES}      3000
${TOPIC}        iotix/environmental-sensor-plus/+/telemetry


*** Test Cases ***
Three Thousand Sensors In Three Processes Deliver Every Reading
    [Documentation]    A linear launch of 3,000 devices, one every 2 ms across all three shards (6 s in all); then
    ...    the fleet sends for 15 s (one reading per device every 10 s) and the shared subscription must have
    ...    every message, none twice.
    Connect To MQTT Broker    ${BROKER}[host]    ${BROKER}[port]    alias=shared
    Subscribe To Topic    ${TOPIC}    qos=1    alias=shared    shards=2
    ${fleet} =    Create Local Fleet    environmental-sensor-plus    count=${DEVICES}    name=campus
    ...    id_pattern=campus-{index:04d}    seed=42    shards=3
    Start Fleet    ${fleet}    strategy=linear    delay=2ms
    Wait Until Fleet Is Running    ${fleet}    timeout=60s
    Sleep    15s    reason=let every device send a reading or two
    ${report} =    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=1    max_loss=0%    source=shared
    Should Be Equal As Integers    ${report}[duplicates]    0
    Stats Add Up Over The Shards    ${fleet}
    [Teardown]    Delete Fleets And Disconnect    shared


*** Keywords ***
Stats Add Up Over The Shards
    [Documentation]    The fleet's stats count every device once, list 3 shards of 1,000, and nothing failed.
    [Arguments]    ${fleet}
    ${stats} =    Get Fleet Stats    ${fleet}
    Should Be Equal As Integers    ${stats}[runningDeviceCount]    ${DEVICES}
    Length Should Be    ${stats}[shards]    3
    Should Be Equal As Integers    ${stats}[shards][1][count]    1000
    Should Be Equal As Integers    ${stats}[messagesFailed]    0

Delete Fleets And Disconnect
    [Documentation]    Test teardown: deletes every fleet and disconnects the receiver ${alias}.
    [Arguments]    ${alias}
    Delete All Fleets
    Disconnect From MQTT Broker    ${alias}
