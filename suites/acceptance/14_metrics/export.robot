*** Settings ***
Documentation       Where the figures go: a fleet's per-second figures exported as InfluxDB points to the local
...                 metrics store (VictoriaMetrics) and read back with PromQL, a store that is down costing the
...                 fleet nothing while the losses are counted, and the Prometheus endpoint.
Resource            ../acceptance.resource

Suite Setup         Start Acceptance Environment
Suite Teardown      Stop Acceptance Environment
Test Teardown       Delete All Fleets


*** Variables ***
# acceptance-sensor sends one reading every 200 ms: 4 devices send 20 messages a second.
${DEVICES}              4
${TOKEN: Secret}        %{IOTIX_TEST_INFLUX_TOKEN=iotix-acceptance-token}
${TOKEN TEXT}           %{IOTIX_TEST_INFLUX_TOKEN=iotix-acceptance-token}


*** Test Cases ***
The Store Holds What The Fleet Sent
    [Documentation]    A fleet runs 3 s with the export on; after Stop Metrics Export the store's last count of
    ...    sent messages is the fleet's own, every point was written and none dropped or failed.
    ${store} =    Start Local Metrics Store
    Start Metrics Export    ${store}    tags={"case": "holds"}
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=${DEVICES}    name=exported    id_pattern=exp-{index}
    Sleep    3s
    Stop Fleet    ${fleet}
    ${status} =    Stop Metrics Export
    ${stats} =    Get Fleet Stats    ${fleet}
    Wait Until Keyword Succeeds    5s    200ms
    ...    Stored Value Should Be    iotix_messages_sent_total{fleet="${fleet}", case="holds"}    ${stats}[messagesSent]
    Export Should Have Written Everything    ${status}

A Secret Token Is Never Shown
    [Documentation]    The token is a Secret; VictoriaMetrics ignores it, and no figure or message shows it.
    ${store} =    Start Local Metrics Store
    Start Metrics Export    ${store}    token=${TOKEN}    org=qa    bucket=acceptance    interval=500ms
    Start Local Fleet    acceptance-sensor    count=1    name=secret-export    id_pattern=sec-{index}
    Sleep    1.5s
    ${status} =    Get Metrics Export Status
    Should Not Contain    ${{ str($status) }}    ${TOKEN TEXT}
    ${status} =    Stop Metrics Export
    Export Should Have Written Everything    ${status}

A Store That Is Down Costs The Fleet Nothing
    [Documentation]    Nothing listens at the export's URL: the fleet keeps its 20 msg/s (± 2), nothing is written and
    ...    what could not be written is counted as failed or dropped.
    ${port} =    Evaluate    iotix.services.pick_free_port()    modules=iotix.services
    Start Metrics Export    http://127.0.0.1:${port}    interval=200ms
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=${DEVICES}    name=unexported    id_pattern=un-{index}
    Message Rate Should Be    ${fleet}    at_least=18    at_most=22    window=3s
    ${status} =    Stop Metrics Export    timeout=1s
    Should Be Equal As Integers    ${status}[pointsWritten]    0
    Should Be True    ${status}[pointsFailed] + ${status}[pointsDropped] > 0
    Should Contain    ${status}[lastError]    Connection refused

The Metrics Endpoint Serves The Fleet's Counters
    [Documentation]    /metrics of Start Metrics Endpoint has the fleet's counters in Prometheus' text format.
    ${url} =    Start Metrics Endpoint
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=${DEVICES}    name=served    id_pattern=srv-{index}
    Sleep    2s
    ${text} =    Evaluate    requests.get($url, timeout=5).text    modules=requests
    Should Match Regexp    ${text}    iotix_messages_sent_total\\{fleet="${fleet}",model="acceptance-sensor",.*\\} [1-9]
    Should Contain    ${text}    iotix_devices_connected{fleet="${fleet}"
    Stop Metrics Endpoint
    Run Keyword And Expect Error    *    Evaluate    requests.get($url, timeout=2)    modules=requests

Querying Without A Store Fails Clearly
    [Documentation]    Query Local Metrics Store names what to do when no store runs.
    Stop Local Metrics Store
    Run Keyword And Expect Error    No local metrics store is running: use Start Local Metrics Store first.
    ...    Query Local Metrics Store    iotix_messages_sent_total


*** Keywords ***
Stored Value Should Be
    [Documentation]    The store has one series for ${promql} and its value is ${expected}.
    [Arguments]    ${promql}    ${expected}
    ${result} =    Query Local Metrics Store    ${promql}
    Length Should Be    ${result}    1
    Should Be Equal As Integers    ${result}[0][value]    ${expected}

Export Should Have Written Everything
    [Documentation]    The export's figures ${status}: points written, none failed, dropped or waiting.
    [Arguments]    ${status}
    Should Be True    ${status}[pointsWritten] > 0
    Should Be Equal As Integers    ${status}[pointsFailed]    0
    Should Be Equal As Integers    ${status}[pointsDropped]    0
    Should Be Equal As Integers    ${status}[pointsQueued]    0
