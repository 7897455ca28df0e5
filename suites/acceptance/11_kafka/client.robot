*** Settings ***
Documentation       The Kafka test client of ProtocolClient against the local Tansu broker: Start/Stop Local Kafka
...                 Broker, Connect To Kafka, Create Kafka Topic, Produce Kafka Message, Subscribe To Kafka Topic,
...                 Wait Until Kafka Messages Received, Get Kafka Messages, Disconnect From Kafka, their errors, and
...                 a Kafka subscription as the receiver of Telemetry Should Be Received From Fleet
...                 (``source=kafka:<alias>``), fed with a fleet's readings relayed from MQTT.
...
...                 Each test consumes with an alias and topics of its own (a consumer group join takes ~3 s) and
...                 disconnects it in its teardown; the broker and the suite's connection ``default`` are shared.
Resource            kafka.resource

Suite Setup         Start Kafka Acceptance Environment
Suite Teardown      Stop Acceptance Environment


*** Test Cases ***
The Local Kafka Broker Gives Its Address
    [Documentation]    Start Local Kafka Broker returns host, port and bootstrap; a second call returns the
    ...    running broker.
    Should Be Equal    ${KAFKA}[host]    127.0.0.1
    Should Be Equal    ${KAFKA}[bootstrap]    127.0.0.1:${KAFKA}[port]
    Should Be True    0 < ${KAFKA}[port] < 65536
    ${again} =    Start Local Kafka Broker
    Should Be Equal    ${again}    ${KAFKA}

A Produced Message Is Received With Its Key And Place
    [Documentation]    A subscription reads from the earliest offsets: what was produced before it is received
    ...    too. Each record has topic, partition, offset, key, value, timestamp (ms) and receivedAt (s).
    VAR    ${topic}    acceptance.kafka.echo
    ${first} =    Produce Kafka Message    ${topic}    before    key=dev-1
    Open Kafka Receiver    echo    ${topic}
    Produce Kafka Message    ${topic}    {"greeting": "hello"}    key=dev-1
    ${count} =    Wait Until Kafka Messages Received    ${topic}    count=2    timeout=10s    alias=echo
    Should Be Equal As Integers    ${count}    2
    ${messages} =    Get Kafka Messages    ${topic}    alias=echo
    Values Should Include    first record    ${messages}[0]    topic=${topic}    key=dev-1    value=before
    ...    partition=${first}[partition]    offset=0    timestamp=${first}[timestamp]
    Values Should Include    second record    ${messages}[1]    value={"greeting": "hello"}    key=dev-1
    ...    partition=${first}[partition]    offset=1
    Should Be True    0 <= time.time() - ${messages}[1][receivedAt] < 60
    [Teardown]    Disconnect From Kafka    echo

Binary Values And Missing Keys
    [Documentation]    A value that is not UTF-8 text comes back as hex; a record without key has key None.
    VAR    ${topic}    acceptance.kafka.binary
    Open Kafka Receiver    binary    ${topic}
    Produce Kafka Message    ${topic}    ${{ b'\x00\xff\x10' }}
    Wait Until Kafka Messages Received    ${topic}    alias=binary
    ${messages} =    Get Kafka Messages    ${topic}    alias=binary
    Should Be Equal    ${messages}[0][value]    00ff10
    Should Be Equal    ${messages}[0][key]    ${None}
    [Teardown]    Disconnect From Kafka    binary

A Created Topic Has The Partitions Asked For
    [Documentation]    Records with different keys spread over the 3 partitions of a created topic; creating
    ...    it again, or a topic with an invalid name or no partition, fails.
    VAR    ${topic}    acceptance.kafka.created
    Create Kafka Topic    ${topic}    partitions=3
    VAR    @{partitions}    @{EMPTY}
    FOR    ${i}    IN RANGE    12
        ${result} =    Produce Kafka Message    ${topic}    value ${i}    key=device-${i}
        Call Method    ${partitions}    append    ${result}[partition]
    END
    ${used} =    Evaluate    sorted(set($partitions))
    Should Be True    len($used) > 1 and set($used) <= {0, 1, 2}    partitions used: ${used}
    Run Keyword And Expect Error    Kafka topic '${topic}' already exists on ${KAFKA}[bootstrap].
    ...    Create Kafka Topic    ${topic}    partitions=3
    Run Keyword And Expect Error    'bad topic' is not a valid Kafka topic name: *
    ...    Create Kafka Topic    bad topic
    Run Keyword And Expect Error    A Kafka topic needs at least 1 partition, got 0.
    ...    Create Kafka Topic    acceptance.kafka.empty    partitions=0

Waiting For More Messages Than Arrive Fails With The Count
    [Documentation]    The failure names the topic, the alias, the timeout and how many did arrive.
    VAR    ${topic}    acceptance.kafka.short
    Open Kafka Receiver    short    ${topic}
    Produce Kafka Message    ${topic}    only one
    Wait Until Kafka Messages Received    ${topic}    count=1    alias=short
    ${t0} =    Now
    Run Keyword And Expect Error
    ...    Expected 3 Kafka message(s) on topic '${topic}' (alias 'short') within 1 s, got 1.
    ...    Wait Until Kafka Messages Received    ${topic}    count=3    timeout=1s    alias=short
    ${elapsed} =    Seconds Since    ${t0}
    Should Be True    1 <= ${elapsed} < 5
    [Teardown]    Disconnect From Kafka    short

Subscriptions And Aliases Are Checked
    [Documentation]    A topic is subscribed once per alias; reading one that is not subscribed, or using an alias
    ...    that is not connected, fails and lists what there is. After Disconnect From Kafka the alias is free.
    VAR    ${topic}    acceptance.kafka.once
    Open Kafka Receiver    once    ${topic}
    Run Keyword And Expect Error    Alias 'once' is already subscribed to Kafka topic '${topic}'.
    ...    Subscribe To Kafka Topic    ${topic}    alias=once
    Run Keyword And Expect Error
    ...    Alias 'once' is not subscribed to Kafka topic 'other' (subscriptions: '${topic}'); use Subscribe*
    ...    Get Kafka Messages    other    alias=once
    Run Keyword And Expect Error    Kafka alias 'once' is already connected to ${KAFKA}[bootstrap]; *
    ...    Connect To Kafka    ${KAFKA}[bootstrap]    alias=once
    Disconnect From Kafka    once
    Run Keyword And Expect Error
    ...    No Kafka connection with alias 'once' (connected: 'default'); use Connect To Kafka first.
    ...    Wait Until Kafka Messages Received    ${topic}    alias=once
    Run Keyword And Expect Error    No Kafka connection with alias 'ghost'*
    ...    Produce Kafka Message    ${topic}    boo    alias=ghost
    Run Keyword And Expect Error    No Kafka connection with alias 'ghost'*
    ...    Create Kafka Topic    acceptance.kafka.ghost    alias=ghost
    Disconnect From Kafka    once

An Unreachable Bootstrap Fails Fast And Says Why
    [Documentation]    Nothing listens on port 1: the failure names the alias, the address, the reason and what to
    ...    do, at once. A malformed address is refused before any connection attempt.
    ${t0} =    Now
    ${error} =    Run Keyword And Expect Error
    ...    Cannot connect 'nowhere' to Kafka: no Kafka broker answers at 127.0.0.1:1: 127.0.0.1:1 refused the*
    ...    Connect To Kafka    127.0.0.1:1    alias=nowhere    timeout=3s
    Should Contain    ${error}    refused the connection (nothing listens there).
    Should End With    ${error}    Start a broker (Start Local Kafka Broker) or check the bootstrap address.
    ${elapsed} =    Seconds Since    ${t0}
    Should Be True    ${elapsed} < 3
    Run Keyword And Expect Error
    ...    EQUALS:Kafka bootstrap servers must look like 'host:port[,host:port]', got '127.0.0.1:kafka'.
    ...    Connect To Kafka    127.0.0.1:kafka    alias=nowhere

Telemetry Relayed To Kafka Is Checked Per Device
    [Documentation]    Every reading a fleet sent, relayed from MQTT to a Kafka topic keyed by device id, is
    ...    counted by the Kafka subscription: Telemetry Should Be Received From Fleet and Get Telemetry Report
    ...    with source=kafka:<alias> find nothing lost, duplicated or out of order.
    Open Kafka Receiver    relay    acceptance.kafka.relay
    ${fleet} =    Run Fleet Until It Sent    relay    10
    ${count} =    Relay Fleet Telemetry To Kafka    ${fleet}    acceptance.kafka.relay
    Wait Until Kafka Messages Received    acceptance.kafka.relay    count=${count}    alias=relay
    ${report} =    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=3    max_loss=0%
    ...    source=kafka:relay
    Values Should Include    report    ${report}    devices=2    received=${count}    expected=${count}    lost=0
    ...    duplicates=0    outOfOrder=0    invalidMessages=0
    ${metrics} =    Get Telemetry Report    ${fleet}    source=kafka:relay
    Values Should Include    metrics    ${metrics}    received=${count}    lost=0
    Should Be True    ${metrics}[latencyMs][count] == ${count}
    [Teardown]    Delete Fleets And Disconnect From Kafka    relay

A Reading Missing From The Kafka Topic Is Lost
    [Documentation]    One reading of device lossy-0 is not relayed: the check fails naming the fleet, the loss, the
    ...    device and its missing sequence number, and the Kafka receiver.
    Open Kafka Receiver    lossy    acceptance.kafka.lossy
    ${fleet} =    Run Fleet Until It Sent    lossy    10
    ${count} =    Relay Fleet Telemetry To Kafka    ${fleet}    acceptance.kafka.lossy    skip=lossy-0:1
    Wait Until Kafka Messages Received    acceptance.kafka.lossy    count=${count}    alias=lossy
    ${error} =    Run Keyword And Expect Error
    ...    Fleet 'lossy' lost 1 of * messages (*), more than the allowed 0 %; worst device lossy-0 lost 1 *
    ...    Telemetry Should Be Received From Fleet    ${fleet}    timeout=1s    source=kafka:lossy
    Should Contain    ${error}    (first missing seq 1)
    Should End With    ${error}    [receiver 'kafka:lossy'].
    Run Keyword And Expect Error    No receiver named 'kafka:nope' (available: 'default', 'kafka:lossy'); *
    ...    Telemetry Should Be Received From Fleet    ${fleet}    source=kafka:nope
    [Teardown]    Delete Fleets And Disconnect From Kafka    lossy

Stop Local Kafka Broker Stops It
    [Documentation]    After Stop Local Kafka Broker nothing answers at its address; Start Local Kafka Broker
    ...    starts a new one.
    Disconnect From Kafka
    Stop Local Kafka Broker
    Run Keyword And Expect Error
    ...    Cannot connect 'stopped' to Kafka: no Kafka broker answers at ${KAFKA}[bootstrap]: *
    ...    Connect To Kafka    ${KAFKA}[bootstrap]    alias=stopped    timeout=2s
    Stop Local Kafka Broker
    [Teardown]    Start Kafka Broker And Connect
