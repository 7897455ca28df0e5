*** Settings ***
Documentation       Vehicles to Kafka: 50 delivery vans drive a loop through Rotterdam and produce their
...                 position, speed, fuel level and engine temperature to the topic vehicles.telemetry of a local
...                 Kafka broker (Tansu), keyed by vehicle id; a consumer counts every reading of every vehicle.
Resource            ../../resources/iotix.resource

Suite Setup         Start Kafka Demo


*** Test Cases ***
Every Vehicle Reading Reaches Kafka
    [Documentation]    The vans start within 5 s; the consumer must have every reading, in order, no duplicate,
    ...    and the broker must have acknowledged every one.
    ${fleet} =    Create Fleet    kafka-vehicle-telemetry    count=50    name=vans    id_pattern=van-{index:02d}
    ...    host=${KAFKA}[host]    port=${KAFKA}[port]    seed=7
    Start Fleet    ${fleet}    strategy=linear    delay=100ms
    Wait Until Fleet Is Running    ${fleet}
    Sleep    3s
    ${report} =    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=3    max_loss=0%
    Should Be Equal As Integers    ${report}[duplicates]    0
    Should Be Equal As Integers    ${report}[outOfOrder]    0
    Stop Fleet    ${fleet}
    Every Reading Should Have Been Acknowledged    ${fleet}

A Reading Carries The Van's Position And Engine State
    [Documentation]    Each message is keyed by the van's id; its value is the JSON envelope with the GPS position
    ...    on the route and the engine temperature in its range.
    ${messages} =    Get Kafka Messages    vehicles.telemetry
    ${reading} =    Evaluate    json.loads($messages[-1]['value'])    modules=json
    Should Be Equal    ${messages}[-1][key]    ${reading}[deviceId]
    Should Be True    51.89 < ${reading}[position][lat] < 51.93 and 4.47 < ${reading}[position][lon] < 4.49
    Should Be True    60 <= ${reading}[engineTemperature] <= 120 and 0 <= ${reading}[fuel] <= 100


*** Keywords ***
Every Reading Should Have Been Acknowledged
    [Documentation]    Fails unless the broker acknowledged every reading ${fleet} handed over; logs the figures.
    [Arguments]    ${fleet}
    ${stats} =    Get Fleet Stats    ${fleet}
    Should Be Equal As Integers    ${stats}[messagesAcked]    ${stats}[messagesSent]
    Log    ${stats}[messagesAcked] readings acknowledged by Kafka; produce latency ${stats}[transport][produceLatencyMs]

Start Kafka Demo
    [Documentation]    Starts a local Kafka broker, loads the shipped models and subscribes a consumer to the
    ...    vehicles' topic. Sets ${KAFKA} (host, port, bootstrap).
    ${broker} =    Start Local Kafka Broker
    VAR    ${KAFKA}    ${broker}    scope=SUITE
    Load Device Models    ${MODELS}
    Connect To Kafka    ${broker}[bootstrap]
    Subscribe To Kafka Topic    vehicles.telemetry
