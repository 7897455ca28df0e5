*** Settings ***
Documentation       Start Local MQTT Broker and Stop Local MQTT Broker: one broker per process, on a port of its
...                 own, reused while it runs. (Restart Local MQTT Broker is exercised by 05_chaos.)
Resource            ../acceptance.resource

Test Teardown       Stop Local MQTT Broker


*** Test Cases ***
Start Local MQTT Broker Returns Its Address
    [Documentation]    host, port, kind and url of a running broker that accepts connections.
    ${broker} =    Start Local MQTT Broker
    Values Should Include    broker    ${broker}    host=127.0.0.1    kind=mosquitto
    Should Be Equal    ${broker}[url]    mqtt://127.0.0.1:${broker}[port]
    Should Be True    0 < ${broker}[port] < 65536
    Connect To MQTT Broker    ${broker}[host]    ${broker}[port]    alias=probe
    Subscribe To Topic    acceptance/broker    qos=1    alias=probe
    Publish MQTT Message    acceptance/broker    up    qos=1    alias=probe
    Wait Until Messages Received    acceptance/broker    alias=probe
    [Teardown]    Run Keywords    Disconnect From MQTT Broker    probe    AND    Stop Local MQTT Broker

A Second Start Returns The Running Broker
    [Documentation]    There is one local broker per process: starting it again gives the same address.
    ${first} =    Start Local MQTT Broker
    ${second} =    Start Local MQTT Broker
    Should Be Equal    ${second}    ${first}

A Stopped Broker Can Be Started Again
    [Documentation]    After Stop Local MQTT Broker nothing listens; Restart needs a running broker; a new Start
    ...    gives a working broker again. Stopping twice is harmless.
    ${broker} =    Start Local MQTT Broker
    Stop Local MQTT Broker
    Stop Local MQTT Broker
    Run Keyword And Expect Error    Cannot connect 'gone' to MQTT broker 127.0.0.1:${broker}[port]: *
    ...    Connect To MQTT Broker    ${broker}[host]    ${broker}[port]    alias=gone    timeout=3s
    Run Keyword And Expect Error    No local MQTT broker is running: use Start Local MQTT Broker first.
    ...    Restart Local MQTT Broker
    ${again} =    Start Local MQTT Broker
    Connect To MQTT Broker    ${again}[host]    ${again}[port]    alias=again
    [Teardown]    Run Keywords    Disconnect From MQTT Broker    again    AND    Stop Local MQTT Broker

An Unknown Broker Kind Is Refused
    [Documentation]    kind is auto, mosquitto or amqtt.
    Run Keyword And Expect Error    Cannot start a local MQTT broker (hivemq): Unknown MQTT broker kind 'hivemq'*
    ...    Start Local MQTT Broker    kind=hivemq
