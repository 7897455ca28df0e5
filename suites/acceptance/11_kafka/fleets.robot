*** Settings ***
Documentation       Kafka devices against the local Tansu broker: every reading is produced keyed by device id
...                 and received complete and in order by a Kafka subscription; a broker that goes away makes
...                 sends fail within maxBlockMs, opens the fleet's circuit and puts the devices in state error;
...                 when it is back, the circuit closes and the devices run again.
Resource            kafka.resource

Suite Setup         Start Kafka Acceptance Environment
Suite Teardown      Stop Acceptance Environment


*** Test Cases ***
Every Reading Of A Kafka Fleet Arrives In Order
    [Documentation]    Vehicles of the shipped model produce to its topic vehicles.telemetry; the Kafka
    ...    subscription receives every reading of every device, without duplicates, in order, keyed by device id.
    Open Kafka Receiver    vehicles    vehicles.telemetry
    ${fleet} =    Create Fleet    kafka-vehicle-telemetry    count=10    name=veh    id_pattern=veh-{index}
    ...    host=${KAFKA}[host]    port=${KAFKA}[port]
    Start Fleet    ${fleet}
    Wait Until Fleet Is Running    ${fleet}
    ${report} =    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=2    max_loss=0%
    Should Be Equal As Integers    ${report}[duplicates]    0
    Should Be Equal As Integers    ${report}[outOfOrder]    0
    ${messages} =    Get Kafka Messages    vehicles.telemetry    alias=vehicles
    Should Be Equal    ${messages}[0][key]    ${{ json.loads($messages[0]['value'])['deviceId'] }}
    Fleet Stats Should Include    ${fleet}    messagesFailed=0    circuitState=closed    transport.producers=2
    [Teardown]    Delete Fleets And Disconnect From Kafka    vehicles

The Fleet Rides Out A Broker Outage
    [Documentation]    The broker stops: sends fail (timeouts, counted), the circuit opens, every device goes to
    ...    state error. The broker starts again on its port: the circuit closes, the devices run again and
    ...    their readings reach the topic.
    ${fleet} =    Create Fleet    acceptance-kafka-sensor    count=3    name=outage    id_pattern=outage-{index}
    ...    host=${KAFKA}[host]    port=${KAFKA}[port]
    Start Fleet    ${fleet}
    Wait Until Fleet Has Sent    ${fleet}    9
    Stop Local Kafka Broker
    Fleet Should Fail Behind An Open Circuit    ${fleet}    3
    Start Local Kafka Broker    port=${KAFKA}[port]
    Circuit Should Be    ${fleet}    closed    timeout=30s
    Devices In State Should Be    ${fleet}    running    3    timeout=15s
    [Teardown]    Restart Kafka And Delete Fleets


*** Keywords ***
Fleet Should Fail Behind An Open Circuit
    [Documentation]    The circuit of ${fleet} opens, its ${count} devices go to state error, timeouts and
    ...    retries are counted.
    [Arguments]    ${fleet}    ${count}
    Circuit Should Be    ${fleet}    open    timeout=15s
    Devices In State Should Be    ${fleet}    error    ${count}    timeout=15s
    ${stats} =    Get Fleet Stats    ${fleet}
    Should Be True    ${stats}[failuresByReason][timeout] > 0 and ${stats}[retries] > 0

Restart Kafka And Delete Fleets
    [Documentation]    Test teardown: deletes every fleet and leaves the suite a running broker and connection.
    Delete All Fleets
    Start Kafka Broker And Connect
