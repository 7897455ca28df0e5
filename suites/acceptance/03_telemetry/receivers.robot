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

Without An Alias The Connection Subscribed To The Topic Is Used
    [Documentation]    Wait Until Messages Received and Get Received Messages pick the one connection
    ...    subscribed to the topic (not 'default', which is subscribed to iotix/# only); a topic within a
    ...    wildcard subscription returns only its own messages.
    Open Receiver    solo    acceptance/solo/#
    Publish MQTT Message    acceptance/solo/a    first    qos=1
    Publish MQTT Message    acceptance/solo/b    second    qos=1
    ${all} =    Wait Until Messages Received    acceptance/solo/#    count=2    timeout=5s
    Length Should Be    ${all}    2
    ${only b} =    Wait Until Messages Received    acceptance/solo/b    timeout=5s
    Should Be Equal    ${{ [m['payload'] for m in $only_b] }}    ${{ ['second'] }}
    ${only a} =    Get Received Messages    acceptance/solo/a
    Should Be Equal    ${only a}[0][payload]    first
    Run Keyword And Expect Error
    ...    Expected 2 message(s) on 'acceptance/solo/b' (alias 'solo') within 1 s, got 1.
    ...    Wait Until Messages Received    acceptance/solo/b    count=2    timeout=1s

The Connection Subscribed To The Topic Itself Wins Over A Wildcard
    [Documentation]    'default' is subscribed to iotix/#, 'exact' to one topic under it: without an alias the
    ...    exact subscription is used.
    Open Receiver    exact    iotix/acceptance/exact
    Publish MQTT Message    iotix/acceptance/exact    hello    qos=1
    ${messages} =    Wait Until Messages Received    iotix/acceptance/exact    timeout=5s
    Should Be Equal    ${messages}[0][payload]    hello
    ${default} =    Wait Until Messages Received    iotix/acceptance/exact    timeout=5s    alias=default
    Should Be Equal    ${default}[0][payload]    hello

Several Or No Connections Subscribed To A Topic Need An Alias
    [Documentation]    Two connections subscribed to the same topic: the failure names both; none subscribed:
    ...    the failure names the connections and their subscriptions.
    Open Receiver    twin-a    acceptance/twins
    Open Receiver    twin-b    acceptance/twins
    Run Keyword And Expect Error
    ...    Several MQTT connections are subscribed to 'acceptance/twins' ('twin-a', 'twin-b'); say which with alias=.
    ...    Wait Until Messages Received    acceptance/twins
    Run Keyword And Expect Error
    ...    Several MQTT connections are subscribed to 'acceptance/twins' ('twin-a', 'twin-b')*
    ...    Get Received Messages    acceptance/twins
    Run Keyword And Expect Error
    ...    No MQTT connection is subscribed to 'acceptance/nobody' (connections: 'default' ('iotix/#'); 'twin-a'*
    ...    Wait Until Messages Received    acceptance/nobody    timeout=1s

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

An Invalid Topic Filter Is Refused Naming The Filter And The Rule
    [Documentation]    A filter with '#' before its last level, or a wildcard inside a level, fails naming the
    ...    filter and the rule (not paho's bare "Invalid subscription filter"). The connection keeps working and
    ...    keeps no refused subscription.
    Open Receiver    filters    acceptance/filters
    Run Keyword And Expect Error
    ...    'filters' cannot subscribe to 'a/#/b': '#' must be the last level: *(as in 'a/#'), but '/b' follows it.
    ...    Subscribe To Topic    a/#/b    alias=filters
    Run Keyword And Expect Error
    ...    'filters' cannot subscribe to 'a/b+/c': '+' must be a whole level (as in 'a/+/c'), but level 2 is 'b+'.
    ...    Subscribe To Topic    a/b+/c    alias=filters
    Publish MQTT Message    acceptance/filters    still-here    qos=1    alias=filters
    ${messages} =    Wait Until Messages Received    acceptance/filters    count=1    alias=filters
    Should Be Equal    ${messages}[0][payload]    still-here
    Run Keyword And Expect Error    'filters' is not subscribed to 'a/#/b'*
    ...    Get Received Messages    a/#/b    alias=filters

A Wildcard Topic To Publish To And A Port Outside 1-65535 Are Refused
    [Documentation]    Publishing needs one topic, so '+' and '#' are refused naming the topic; a port beyond
    ...    65535 is refused naming it, instead of being dialled modulo 65536.
    Run Keyword And Expect Error
    ...    'default' cannot publish to 'a/+': a message goes to one topic: '+' is a wildcard, for subscriptions only.
    ...    Publish MQTT Message    a/+    x
    Run Keyword And Expect Error
    ...    Cannot connect 'far' to MQTT broker 127.0.0.1:70000: port must be a port number between 1 and 65535, *
    ...    Connect To MQTT Broker    127.0.0.1    70000    alias=far


*** Keywords ***
Disconnect Test Receivers
    [Documentation]    Disconnects the receivers a test opened (every alias but the suite's 'default').
    FOR    ${alias}    IN    echo    bg    wild    late    binary    short    narrow    once    solo    exact
    ...    twin-a    twin-b    filters
        Disconnect From MQTT Broker    ${alias}
    END

Clear Retained Message And Disconnect
    [Documentation]    Removes the retained message of ${topic} (an empty retained payload) and disconnects.
    [Arguments]    ${topic}
    Publish MQTT Message    ${topic}    ${EMPTY}    qos=1    retain=True
    Disconnect Test Receivers
