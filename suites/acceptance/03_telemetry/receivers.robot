*** Settings ***
Documentation       The test client of ProtocolClient: Connect To MQTT Broker, Subscribe To Topic, Publish MQTT
...                 Message, Wait Until Messages Received, Get Received Messages, Disconnect From MQTT Broker,
...                 and their errors for aliases, subscriptions and brokers that do not exist.
Resource            ../acceptance.resource

Suite Setup         Start Acceptance Environment
Suite Teardown      Stop Acceptance Environment
Test Teardown       Disconnect Test Receivers


*** Test Cases ***
A Published Message Arrives At A Subscriber
    [Documentation]    Each message is a dictionary with topic, payload (text), qos, retain and receivedAt.
    Open Receiver    echo    acceptance/echo/#
    Publish MQTT Message    acceptance/echo/hello    {"greeting": "hello"}    qos=1
    ${messages} =    Wait Until Messages Received    acceptance/echo/#    count=1    timeout=5s    alias=echo
    Length Should Be    ${messages}    1
    Should Be Equal    ${messages}[0][topic]    acceptance/echo/hello
    Should Be Equal    ${messages}[0][payload]    {"greeting": "hello"}
    Should Be Equal As Integers    ${messages}[0][qos]    1
    Should Be Equal    ${messages}[0][retain]    ${False}
    ${age} =    Evaluate    time.time() - ${messages}[0][receivedAt]    modules=time
    Should Be True    0 <= ${age} < 60

Messages Are Collected In The Background, In Order
    [Documentation]    What arrives after Subscribe To Topic is kept; Get Received Messages reads it without waiting.
    Open Receiver    bg    acceptance/background
    FOR    ${i}    IN RANGE    5
        Publish MQTT Message    acceptance/background    message ${i}    qos=1
    END
    Wait Until Messages Received    acceptance/background    count=5    alias=bg
    ${messages} =    Get Received Messages    acceptance/background    alias=bg
    ${payloads} =    Evaluate    [m['payload'] for m in $messages]
    Should Be Equal    ${payloads}    ${{ ['message 0', 'message 1', 'message 2', 'message 3', 'message 4'] }}

Wildcard Subscriptions Collect Every Matching Topic
    [Documentation]    + matches one level, # the rest; a message is kept by every subscription it matches.
    Open Receiver    wild    acceptance/wild/+/temp    acceptance/wild/#
    Publish MQTT Message    acceptance/wild/a/temp    1    qos=1
    Publish MQTT Message    acceptance/wild/b/temp    2    qos=1
    Publish MQTT Message    acceptance/wild/b/humidity    3    qos=1
    Wait Until Messages Received    acceptance/wild/#    count=3    alias=wild
    ${temps} =    Get Received Messages    acceptance/wild/+/temp    alias=wild
    Length Should Be    ${temps}    2
    ${all} =    Get Received Messages    acceptance/wild/#    alias=wild
    Length Should Be    ${all}    3

A Retained Message Reaches A Later Subscriber
    [Documentation]    retain=True keeps the message at the broker for whoever subscribes next.
    Publish MQTT Message    acceptance/retained/state    on    qos=1    retain=True
    Open Receiver    late    acceptance/retained/state
    ${messages} =    Wait Until Messages Received    acceptance/retained/state    count=1    alias=late
    Should Be Equal    ${messages}[0][payload]    on
    Should Be Equal    ${messages}[0][retain]    ${True}
    [Teardown]    Clear Retained Message And Disconnect    acceptance/retained/state

Binary Payloads Are Returned As Hex
    [Documentation]    A payload that is not UTF-8 text comes back as its hex digits.
    Open Receiver    binary    acceptance/binary
    Publish MQTT Message    acceptance/binary    ${{ b'\x00\xff\x10' }}    qos=1
    ${messages} =    Wait Until Messages Received    acceptance/binary    alias=binary
    Should Be Equal    ${messages}[0][payload]    00ff10

Waiting For More Messages Than Arrive Fails With The Count
    [Documentation]    The failure names the topic, the alias, the timeout and how many did arrive.
    Open Receiver    short    acceptance/short
    Publish MQTT Message    acceptance/short    only one    qos=1
    Wait Until Messages Received    acceptance/short    count=1    alias=short
    Run Keyword And Expect Error
    ...    Expected 3 message(s) on 'acceptance/short' (alias 'short') within 1 s, got 1.
    ...    Wait Until Messages Received    acceptance/short    count=3    timeout=1s    alias=short

Reading A Topic That Was Not Subscribed Fails
    [Documentation]    The message lists the subscriptions the alias has.
    Open Receiver    narrow    acceptance/narrow
    Run Keyword And Expect Error
    ...    'narrow' is not subscribed to 'acceptance/other' (subscriptions: 'acceptance/narrow'); use Subscribe*
    ...    Get Received Messages    acceptance/other    alias=narrow
    Run Keyword And Expect Error    'narrow' is not subscribed to 'acceptance/other'*
    ...    Wait Until Messages Received    acceptance/other    alias=narrow

An Unknown Alias Fails And Lists The Connections
    [Documentation]    Every keyword that takes an alias names the ones that are connected.
    Run Keyword And Expect Error
    ...    No MQTT connection with alias 'ghost' (connected: 'default'); use Connect To MQTT Broker first.
    ...    Subscribe To Topic    acceptance/ghost    alias=ghost
    Run Keyword And Expect Error    No MQTT connection with alias 'ghost'*
    ...    Publish MQTT Message    acceptance/ghost    boo    alias=ghost
    Run Keyword And Expect Error    No MQTT connection with alias 'ghost'*
    ...    Get Received Messages    acceptance/ghost    alias=ghost

An Alias Is Connected Once
    [Documentation]    A second Connect To MQTT Broker with the same alias is refused; after Disconnect From
    ...    MQTT Broker the alias is free, and what it collected is gone.
    ${client_id} =    Connect To MQTT Broker    ${BROKER}[host]    ${BROKER}[port]    alias=once
    ...    client_id=acceptance-once
    Should Be Equal    ${client_id}    acceptance-once
    Run Keyword And Expect Error
    ...    Alias 'once' is already connected to mqtt://${BROKER}[host]:${BROKER}[port]; disconnect it first*
    ...    Connect To MQTT Broker    ${BROKER}[host]    ${BROKER}[port]    alias=once
    Subscribe To Topic    acceptance/once    alias=once
    Disconnect From MQTT Broker    once
    Run Keyword And Expect Error    No MQTT connection with alias 'once'*
    ...    Get Received Messages    acceptance/once    alias=once
    Disconnect From MQTT Broker    once
    Connect To MQTT Broker    ${BROKER}[host]    ${BROKER}[port]    alias=once

An Unreachable Broker Fails To Connect
    [Documentation]    The failure names the alias, the address and the reason.
    Run Keyword And Expect Error    Cannot connect 'nowhere' to MQTT broker 127.0.0.1:1: cannot reach broker*
    ...    Connect To MQTT Broker    127.0.0.1    1    alias=nowhere    timeout=5s


*** Keywords ***
Disconnect Test Receivers
    [Documentation]    Disconnects the receivers a test opened (every alias but the suite's 'default').
    FOR    ${alias}    IN    echo    bg    wild    late    binary    short    narrow    once
        Disconnect From MQTT Broker    ${alias}
    END

Clear Retained Message And Disconnect
    [Documentation]    Removes the retained message of ${topic} (an empty retained payload) and disconnects.
    [Arguments]    ${topic}
    Publish MQTT Message    ${topic}    ${EMPTY}    qos=1    retain=True
    Disconnect Test Receivers
