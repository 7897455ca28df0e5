*** Settings ***
Documentation       Set Telemetry Override and Clear Telemetry Override, and the behaviors they trigger: the
...                 industrial gateway's high-CPU alert and the acceptance sensor's level alert.
Resource            ../acceptance.resource

Suite Setup         Start Acceptance Environment
Suite Teardown      Stop Acceptance Environment
Test Teardown       Delete All Fleets


*** Test Cases ***
An Override Forces A Reading Until It Is Cleared
    [Documentation]    The value is converted to the field's type (text 999 becomes the integer 999); after
    ...    Clear Telemetry Override the generator's values come back.
    Open Receiver    forced    iotix/acceptance-sensor/forced-0/telemetry
    Start Local Fleet    acceptance-sensor    name=forced    id_pattern=forced-{index}
    Set Telemetry Override    forced-0    counter    999
    Wait Until Latest Reading Is    forced    forced-0    counter    ${999}
    Clear Telemetry Override    forced-0    counter
    ${reading} =    Wait Until Keyword Succeeds    5s    100ms
    ...    Latest Reading Should Not Be    forced    forced-0    counter    ${999}
    Should Be True    ${reading}[counter] < 999
    [Teardown]    Delete Fleets And Disconnect    forced

An Override Applies To One Device Only
    [Documentation]    The other devices of the fleet keep their generated values.
    Open Receiver    one    iotix/acceptance-sensor/one-1/telemetry
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=2    name=one    id_pattern=one-{index}
    Set Telemetry Override    one-0    counter    -5
    Wait Until Fleet Has Sent    ${fleet}    8
    ${reading} =    Latest Reading Should Not Be    one    one-1    counter    ${-5}
    Should Be True    ${reading}[counter] >= 0
    [Teardown]    Delete Fleets And Disconnect    one

Override Errors Name The Device, The Field And The Value
    [Documentation]    Unknown fields list the fields there are; values that do not convert say why.
    Create Local Fleet    acceptance-sensor    name=bad-override    id_pattern=bad-override-{index}
    Run Keyword And Expect Error
    ...    Device 'bad-override-0' (model 'acceptance-sensor') has no telemetry field 'pressure'; fields: counter, *
    ...    Set Telemetry Override    bad-override-0    pressure    1013
    Run Keyword And Expect Error
    ...    Cannot override 'counter' of device 'bad-override-0' with 'lots': *(the field is of type integer).
    ...    Set Telemetry Override    bad-override-0    counter    lots
    Run Keyword And Expect Error
    ...    Device 'bad-override-0' (model 'acceptance-sensor') has no telemetry field 'pressure'*
    ...    Clear Telemetry Override    bad-override-0    pressure
    Run Keyword And Expect Error    No device 'ghost-0' in any fleet (fleets: bad-override).
    ...    Set Telemetry Override    ghost-0    counter    1
    Clear Telemetry Override    bad-override-0    counter

The Gateway Raises Its High CPU Alert When cpuUsage Is Forced Above 90
    [Documentation]    industrial-gateway-plus's behavior 'cpuUsage > 90' publishes an alert with the reading;
    ...    a gateway that is not forced stays quiet. The override is set before the start, so the first
    ...    reading already triggers it.
    Open Receiver    alerts    iotix/industrial-gateway-plus/+/alerts
    ${fleet} =    Create Local Fleet    industrial-gateway-plus    count=2    name=gateways    id_pattern=gw-{index}
    Set Telemetry Override    gw-1    cpuUsage    95
    Start Fleet    ${fleet}
    ${alerts} =    Wait Until Messages Received    iotix/industrial-gateway-plus/+/alerts    timeout=10s    alias=alerts
    Should Be Equal    ${alerts}[0][topic]    iotix/industrial-gateway-plus/gw-1/alerts
    ${alert} =    Evaluate    json.loads($alerts[0]['payload'])    modules=json
    Values Should Include    alert    ${alert}    alert=high_cpu    cpu=95.0
    Fleet Stats Should Include    ${fleet}    behaviorsFired=1
    [Teardown]    Delete Fleets And Disconnect    alerts

A Behavior Fires Once Per Cooldown
    [Documentation]    The acceptance sensor's level alert (level > 100, cooldown 60 s) fires once although every
    ...    reading (5 a second) meets the condition; it carries the device id and the forced value.
    Open Receiver    level    iotix/acceptance-sensor/+/alerts
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=2    name=level    id_pattern=level-{index}
    Set Telemetry Override    level-1    level    150
    ${alerts} =    Wait Until Messages Received    iotix/acceptance-sensor/+/alerts    timeout=5s    alias=level
    ${alert} =    Evaluate    json.loads($alerts[0]['payload'])    modules=json
    Values Should Include    alert    ${alert}    alert=level    deviceId=level-1    level=150.0
    Wait Until Fleet Has Sent    ${fleet}    ${{ ${alerts}.__len__() + 10 }}
    ${alerts} =    Get Received Messages    iotix/acceptance-sensor/+/alerts    alias=level
    Length Should Be    ${alerts}    1
    [Teardown]    Delete Fleets And Disconnect    level


*** Keywords ***
Latest Reading
    [Documentation]    The newest telemetry envelope of ${device_id} that receiver ${alias} got (subscribed to that
    ...    device's telemetry topic), as a dictionary.
    [Arguments]    ${alias}    ${device_id}
    ${messages} =    Wait Until Messages Received    iotix/acceptance-sensor/${device_id}/telemetry    alias=${alias}
    ...    timeout=5s
    ${reading} =    Evaluate    json.loads($messages[-1]['payload'])    modules=json
    RETURN    ${reading}

Wait Until Latest Reading Is
    [Documentation]    Waits until the newest reading of ${device_id} at receiver ${alias} has ${field} = ${value}.
    [Arguments]    ${alias}    ${device_id}    ${field}    ${value}
    Wait Until Keyword Succeeds    5s    100ms    Latest Reading Should Be    ${alias}    ${device_id}    ${field}
    ...    ${value}

Latest Reading Should Be
    [Documentation]    Fails unless the newest reading of ${device_id} at receiver ${alias} has ${field} = ${value}.
    [Arguments]    ${alias}    ${device_id}    ${field}    ${value}
    ${reading} =    Latest Reading    ${alias}    ${device_id}
    Should Be Equal    ${reading}[${field}]    ${value}
    RETURN    ${reading}

Latest Reading Should Not Be
    [Documentation]    Fails if the newest reading of ${device_id} at receiver ${alias} has ${field} = ${value};
    ...    returns the reading.
    [Arguments]    ${alias}    ${device_id}    ${field}    ${value}
    ${reading} =    Latest Reading    ${alias}    ${device_id}
    Should Not Be Equal    ${reading}[${field}]    ${value}
    RETURN    ${reading}
