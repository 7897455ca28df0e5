*** Settings ***
Documentation       CoAP devices: soil sensors post confirmable readings to a collector (the local CoAP server);
...                 smart plugs in server mode are observed and switched like a CoAP backend would.
Resource            ../../resources/iotix.resource

Suite Setup         Start Local Test Environment


*** Test Cases ***
Soil Sensors Post Every Reading To The Collector
    [Documentation]    40 soil sensors start in batches of 20 and post each reading as a confirmable request
    ...    (retransmitted until acknowledged); the collector must have every reading of every device.
    ${fleet} =    Start Soil Sensors    40
    ${report} =    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=2    max_loss=0%    source=coap
    Should Be Equal As Integers    ${report}[duplicates]    0
    ${posts} =    Get CoAP Requests Received    path=/telemetry/soil-07
    Should Be True    len($posts) >= 2
    Should Be Equal As Integers    ${posts}[0][contentFormat]    50
    ${stats} =    Get Fleet Stats    ${fleet}
    Should Be Equal As Integers    ${stats}[messagesFailed]    0
    Should Be True    ${stats}[messagesAcked] >= 80
    Stop Fleet    ${fleet}

Smart Plugs Answer On Ports Of Their Own
    [Documentation]    Three plugs in server mode each listen on a UDP port of their own and list their
    ...    resources: observable telemetry and a switch command.
    ${fleet} =    Create Fleet    coap-smart-plug    count=3    name=plugs    id_pattern=plug-{index}
    Start Fleet    ${fleet}
    Wait Until Fleet Is Running    ${fleet}
    ${plug} =    Get Device Status    plug-2
    ${core} =    CoAP GET    ${plug}[url]/.well-known/core
    Should Contain    ${core}[payload]    </commands/switch>
    ${power} =    CoAP GET    ${plug}[url]/telemetry/powerW
    Should Be Equal    ${power}[code]    2.05

A Backend Observes A Plug And Switches It
    [Documentation]    A backend observes one plug's /telemetry (a notification per reading), switches its relay
    ...    off and makes it report every 500 ms.
    ${plug} =    Get Device Status    plug-0
    Observe CoAP Resource    ${plug}[url]/telemetry    alias=plug-0
    ${notes} =    Wait Until CoAP Notifications Received    plug-0    count=2    timeout=15s
    Should Contain    ${notes}[0][payload]    "deviceId":"plug-0"
    Send CoAP Command    ${plug}[url]    switch    {"state": "off"}
    Send CoAP Command    ${plug}[url]    setInterval    {"intervalMs": 500}
    Wait Until CoAP Notifications Received    plug-0    count=8    timeout=15s
    ${commands} =    Get Received Commands    plug-0
    Should Be Equal    ${{ [c['command'] for c in $commands] }}    ${{ ['switch', 'setInterval'] }}
    Stop Observing CoAP Resource    plug-0


*** Keywords ***
Start Soil Sensors
    [Documentation]    Starts a local CoAP server and ${count} soil sensors posting to it, launched in batches
    ...    of 20 every 500 ms; waits until all run and returns the fleet name.
    [Arguments]    ${count}
    ${coap} =    Start Local CoAP Server
    ${fleet} =    Create Fleet    coap-soil-sensor    count=${count}    name=soil    id_pattern=soil-{index:02d}
    ...    seed=7    host=${coap}[host]    port=${coap}[port]
    Start Fleet    ${fleet}    strategy=batch    batch_size=20    delay=500ms
    Wait Until Fleet Is Running    ${fleet}
    RETURN    ${fleet}

Send CoAP Command
    [Documentation]    POSTs ${parameters} (JSON) to /commands/${command} of the device at ${url}; fails unless
    ...    the device answers 2.04 Changed.
    [Arguments]    ${url}    ${command}    ${parameters}
    ${answer} =    CoAP POST    ${url}/commands/${command}    ${parameters}
    Should Be Equal    ${answer}[code]    2.04    ${command}: ${answer}
