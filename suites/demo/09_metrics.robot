*** Settings ***
Documentation       Figures a team can watch and keep: a fleet of cellular asset trackers runs for half a minute
...                 through a dropout and a latency fault while its figures go, every second, to a local
...                 time-series store through the InfluxDB write API; the suite judges its rate, devices connected,
...                 errors, loss and latency over windows, puts its charts (dropout and fault marked) in this log,
...                 and checks that the store holds every figure written. The run report of the whole demo is
...                 written into results/ at the end (suites/demo/__init__.robot).
Resource            ../../resources/iotix.resource

Suite Setup         Start Environment With A Metrics Store
Test Teardown       Delete All Fleets


*** Variables ***
${DEVICES}      100
${FLEET}        pallets


*** Test Cases ***
A Fleet Through A Dropout And A Latency Fault
    [Documentation]    100 trackers (one QoS 1 reading each a second: 100 msg/s); 10 drop out and come back,
    ...    then 200 ms of upstream latency hits every device for 8 s. The rate holds, everyone is connected again,
    ...    nothing is lost, and the last seconds' latency is back to normal. The charts mark the dropout and the
    ...    fault.
    Start Local Fleet    cellular-asset-tracker    count=${DEVICES}    name=${FLEET}    id_pattern=gh-{index:03d}
    ...    seed=42
    Message Rate Should Be    ${FLEET}    at_least=90    at_most=110    window=5s
    Put The Fleet Through A Dropout And A Latency Fault
    Connected Devices Should Be    ${FLEET}    ${DEVICES}    timeout=20s
    Error Rate Should Be Below    ${FLEET}    1    window=10s
    Sleep    6s
    Latency Should Be Below    ${FLEET}    100ms    window=5s
    Loss Should Be Below    ${FLEET}    0.01
    Stop Fleet And Keep Its Count
    Log Fleet Charts    ${FLEET}

Every Figure Written Is In The Store
    [Documentation]    After the export is flushed, the store's last value of messages sent by the fleet is what
    ...    the fleet reported sending when it stopped, and no point was dropped on the way.
    ${export} =    Stop Metrics Export
    Should Be Equal As Integers    ${export}[pointsDropped]    0
    ${stored} =    Query Local Metrics Store    max(iotix_messages_sent_total{fleet="${FLEET}"})
    Should Be Equal As Integers    ${stored}[0][value]    ${SENT}


*** Keywords ***
Put The Fleet Through A Dropout And A Latency Fault
    [Documentation]    10 devices drop out and reconnect after 2 s; then 200 ms of upstream latency for 8 s.
    Drop Devices    ${FLEET}    count=10    reconnect=True    reconnect_delay=2s    seed=3
    Wait Until Dropout Is Complete    ${FLEET}
    Add Network Fault    ${FLEET}    latency    latency=200ms    direction=upstream    duration=8s
    Sleep    8s

Stop Fleet And Keep Its Count
    [Documentation]    Stops the fleet and sets ${SENT}, the messages it sent, for the next test.
    Stop Fleet    ${FLEET}
    ${stats} =    Get Fleet Stats    ${FLEET}
    VAR    ${SENT}    ${stats}[messagesSent]    scope=SUITE

Start Environment With A Metrics Store
    [Documentation]    The local broker and receiver, a local VictoriaMetrics, and the export of every fleet's
    ...    figures to it (its InfluxDB write API) every second.
    Start Local Test Environment
    ${store} =    Start Local Metrics Store
    Start Metrics Export    ${store}    bucket=iotix-demo    tags=&{{ {'team': 'qa'} }}
