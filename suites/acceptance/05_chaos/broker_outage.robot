*** Settings ***
Documentation       Restart Local MQTT Broker: the broker goes away and comes back on the same port; the devices
...                 notice, queue their QoS 1 readings, reconnect with backoff (counted) and deliver what they
...                 queued.
Resource            ../acceptance.resource

Suite Setup         Start Acceptance Environment
Suite Teardown      Stop Acceptance Environment
Test Teardown       Delete All Fleets


*** Test Cases ***
The Fleet Recovers From A Two Second Broker Outage
    [Documentation]    Every device reconnects (reconnects counted), nothing is dropped or fails, the offline queues
    ...    drain, and every QoS 1 message sent until then, those queued during the outage included, is
    ...    acknowledged by the broker.
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=5    name=outage    id_pattern=outage-{index}
    ...    reconnect_base=200ms    reconnect_cap=1s
    Wait Until Fleet Has Sent    ${fleet}    10
    ${before} =    Get Fleet Stats    ${fleet}
    ${restarted} =    Restart Local MQTT Broker    down_for=2s
    Should Be Equal    ${restarted}    ${BROKER}
    Wait Until Fleet Is Running    ${fleet}    timeout=30s
    ${stats} =    Wait Until Keyword Succeeds    10s    100ms
    ...    Fleet Stats Should Include    ${fleet}    messagesQueued=0    messagesDropped=0    messagesFailed=0
    Should Be True    ${stats}[reconnects] >= 5 and ${stats}[disconnects] >= 5
    Should Be True    ${stats}[messagesSent] >= ${before}[messagesSent] + 5 * 8
    ...    5 devices at 5 readings a second sent only ${stats}[messagesSent] - ${before}[messagesSent] in 2+ s
    Wait Until Keyword Succeeds    10s    100ms    Broker Should Have Acknowledged    ${fleet}    ${stats}[messagesSent]

Telemetry Flows To New Receivers After The Outage
    [Documentation]    After a restart without delay, a receiver that subscribes anew gets every reading the
    ...    devices send from then on.
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=3    name=after    id_pattern=after-{index}
    Restart Local MQTT Broker
    Wait Until Fleet Is Running    ${fleet}    timeout=30s
    Open Receiver    fresh    iotix/acceptance-sensor/+/telemetry
    ${report} =    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=5    max_loss=0%
    ...    timeout=15s    source=fresh
    Should Be Equal As Integers    ${report}[silentDevices]    0
    [Teardown]    Delete Fleets And Disconnect    fresh


*** Keywords ***
Broker Should Have Acknowledged
    [Documentation]    Fails unless the broker acknowledged at least ${count} of the (QoS 1) messages ${fleet} sent.
    [Arguments]    ${fleet}    ${count}
    ${stats} =    Get Fleet Stats    ${fleet}
    Should Be True    ${stats}[messagesAcked] >= ${count}
    ...    Fleet '${fleet}': ${stats}[messagesAcked] messages acknowledged, expected at least ${count}
