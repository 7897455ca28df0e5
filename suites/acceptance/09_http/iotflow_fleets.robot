*** Settings ***
Documentation       Fleets of the IoTFlow device flow against the local backend: a linear launch, a dropout with
...                 reconnect, names that are taken (onConflict suffix and fail), a revoked API key (403), the
...                 backend's rate limit (429), a backend that is not there, and hybrid devices that publish
...                 their telemetry over MQTT. Each test starts a backend of its own.
Resource            http.resource

Suite Setup         Start Acceptance Environment
Suite Teardown      Stop Acceptance Environment
Test Setup          Start IoTFlow Test Backend
Test Teardown       Stop IoTFlow Test Backend


*** Test Cases ***
A Linear Launch Registers One Device After Another
    [Documentation]    4 devices 400 ms apart: the last registers about 1.2 s after the first, in order; every
    ...    reading of every device reaches the store.
    ${fleet} =    Create Fleet    acceptance-iotflow-sensor    count=4    name=linear    id_pattern=linear-{index}
    ...    host=${BACKEND}[host]    port=${BACKEND}[port]
    ${t0} =    Now
    Start Fleet    ${fleet}    strategy=linear    delay=400ms
    ${devices} =    Registered Devices
    Should Be True    len($devices) < 4    every device registered right after Start Fleet
    Wait Until Fleet Is Running    ${fleet}    timeout=20s
    ${elapsed} =    Seconds Since    ${t0}
    Should Be True    1.15 <= ${elapsed} < 20    the last device ran after ${elapsed} s, expected about 1.2 s
    Devices Should Have Registered In Order    linear-0    linear-1    linear-2    linear-3
    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=3    max_loss=0%

An IoTFlow Fleet Recovers From A Dropout
    [Documentation]    Dropped devices stop sending; with reconnect they are back after reconnect_delay with
    ...    the API key they had (no new registration) and nothing sent is lost.
    ${fleet} =    Start IoTFlow Fleet    acceptance-iotflow-sensor    count=4    name=dropout
    ...    id_pattern=dropout-{index}
    ${dropped} =    Drop Devices    ${fleet}    strategy=linear    count=2    delay=500ms    seed=3    reconnect=True
    ...    reconnect_delay=3s
    Dropped Device Should Be Silent    ${dropped}[0]
    Wait Until Dropout Is Complete    ${fleet}    timeout=20s
    Wait Until Fleet Is Running    ${fleet}    timeout=10s
    Fleet Stats Should Include    ${fleet}    runningDeviceCount=4    disconnects=2    reconnects=2
    ${back} =    Get Device Status    ${dropped}[1]
    Wait Until Keyword Succeeds    10s    200ms    Device Should Have Delivered More Than    ${dropped}[1]
    ...    ${back}[messagesAcked]
    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=5    max_loss=0%
    Registered Devices Should Be    dropout-0    dropout-1    dropout-2    dropout-3

A Taken Name Gets A Suffix
    [Documentation]    With onConflict suffix a device whose name is registered already registers as name_1,
    ...    like IoTFlow's auto-suffix, and its telemetry is stored under that device.
    Register Someone Else As    taken-0
    ${fleet} =    Start IoTFlow Fleet    acceptance-iotflow-sensor    count=2    name=taken    id_pattern=taken-{index}
    Registered Devices Should Be    taken-0    taken-0_1    taken-1
    ${devices} =    Registered Devices
    Values Should Include    suffixed    ${devices}[taken-0_1]    location=taken
    Values Should Include    the first taken-0    ${devices}[taken-0]    location=${EMPTY}
    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=2    max_loss=0%
    ${records} =    GET On Session    iotflow    /api/v1/telemetry/${devices}[taken-0_1][id]
    ${senders} =    Evaluate    {r['metadata']['deviceId'] for r in $records.json()['data']}
    Should Be Equal    ${senders}    ${{ {'taken-0'} }}

A Taken Name Fails With onConflict fail
    [Documentation]    With onConflict fail the device cannot register: Wait Until Fleet Is Running names it and
    ...    the reason, the device keeps trying (connectFailures), and the other device works.
    Register Someone Else As    strict-0
    ${fleet} =    Create Fleet    acceptance-iotflow-strict    count=2    name=strict    id_pattern=strict-{index}
    ...    host=${BACKEND}[host]    port=${BACKEND}[port]
    Start Fleet    ${fleet}
    ${error} =    Run Keyword And Expect Error    Fleet 'strict': 1 of 2 devices not running after 3 s*
    ...    Wait Until Fleet Is Running    ${fleet}    timeout=3s
    Should Contain    ${error}
    ...    the name 'strict-0' is already registered at ${BACKEND}[url] and onConflict is 'fail' (use 'suffix'
    ${status} =    Get Device Status    strict-0
    Should Be True    ${status}[connectFailures] >= 1 and ${status}[messagesSent] == 0
    Should Match    ${status}[lastError]    device 'strict-0': the name 'strict-0' is already registered at *
    Wait Until Keyword Succeeds    10s    200ms    Device Should Have Delivered More Than    strict-1    1

A Revoked Key Is Refused With 403
    [Documentation]    An admin sets a device inactive: its sends fail with 403 and the reason in its last error
    ...    while it keeps running; set active again, it delivers again.
    ${fleet} =    Start IoTFlow Fleet    acceptance-iotflow-sensor    count=2    name=revoke
    ...    id_pattern=revoke-{index}
    Wait Until Fleet Has Sent    ${fleet}    4
    Set Backend Device Status    revoke-0    inactive
    ${revoked} =    Wait Until Keyword Succeeds    10s    200ms    Device Should Have Failed    revoke-0    2
    VAR    ${expected}    HTTP 403 from POST ${BACKEND}[url]/api/v1/devices/telemetry: *is inactive: its API key*
    ...    (the API key was rejected: revoked or unknown)
    Should Match    ${revoked}[lastError]    ${expected}
    Should Be Equal    ${revoked}[state]    running
    Set Backend Device Status    revoke-0    active
    Wait Until Keyword Succeeds    10s    200ms    Device Should Have Delivered More Than    revoke-0
    ...    ${revoked}[messagesAcked]

The Others Keep Delivering While A Key Is Revoked
    [Documentation]    Devices whose keys are valid are not affected by a revoked one.
    Start IoTFlow Fleet    acceptance-iotflow-sensor    count=3    name=others    id_pattern=others-{index}
    Set Backend Device Status    others-0    inactive
    Wait Until Keyword Succeeds    10s    200ms    Device Should Have Failed    others-0    2
    ${other} =    Get Device Status    others-1
    Wait Until Keyword Succeeds    10s    200ms    Device Should Have Delivered More Than    others-1
    ...    ${{ ${other}[messagesAcked] + 2 }}
    Device Status Should Include    others-1    messagesFailed=0    lastError=None
    Device Status Should Include    others-2    messagesFailed=0    lastError=None

The Rate Limit Answers 429 And It Is Counted
    [Documentation]    A backend that takes 1 request per second per key gets more from each device (a reading
    ...    every 500 ms and a heartbeat every second): the excess is refused with 429, counted as failed
    ...    with the reason, and the rest is delivered; the devices keep running.
    [Setup]    Start IoTFlow Test Backend    rate_limit=1/1
    ${fleet} =    Start IoTFlow Fleet    acceptance-iotflow-sensor    count=2    name=limited
    ...    id_pattern=limited-{index}
    ${stats} =    Wait Until Fleet Has Failed    ${fleet}    4
    Should Be True    ${stats}[messagesAcked] > 0
    ${status} =    Wait Until Keyword Succeeds    10s    200ms    Device Should Have Failed    limited-0    1
    Should Match    ${status}[lastError]    *HTTP 429 from POST ${BACKEND}[url]/api/v1/devices/*Rate limit exceeded*
    Fleet Stats Should Include    ${fleet}    runningDeviceCount=2

A Backend That Is Not There Fails The Registration
    [Documentation]    Devices that cannot reach the backend stay connecting and retry; Wait Until Fleet Is Running
    ...    names the address and the reason, and stopping the fleet does not hang.
    ${port} =    Free TCP Port
    ${fleet} =    Create Fleet    acceptance-iotflow-sensor    count=2    name=nowhere    id_pattern=nowhere-{index}
    ...    host=127.0.0.1    port=${port}    reconnect_base=200ms    reconnect_cap=1s
    Start Fleet    ${fleet}
    ${error} =    Run Keyword And Expect Error    Fleet 'nowhere': 2 of 2 devices not running after 2 s*
    ...    Wait Until Fleet Is Running    ${fleet}    timeout=2s
    Should Contain    ${error}    cannot connect to 127.0.0.1:${port}
    Device Status Should Include    nowhere-0    state=connecting    messagesSent=0
    ${t0} =    Now
    Stop Fleet    ${fleet}
    ${elapsed} =    Seconds Since    ${t0}
    Should Be True    ${elapsed} < 10    Stop Fleet took ${elapsed} s

Hybrid Devices Publish Their Telemetry Over MQTT
    [Documentation]    A hybrid device registers over HTTP, fetches its MQTT credentials and publishes IoTFlow
    ...    telemetry bodies to the topic it was given; a subscribed receiver checks them like any fleet's.
    [Setup]    Start IoTFlow Test Backend    mqtt_host=${BROKER}[host]    mqtt_port=${BROKER}[port]
    Open Receiver    hybrid    iotflow/devices/+/telemetry
    ${fleet} =    Start IoTFlow Fleet    iotflow-hybrid-sensor    count=2    name=hybrid    id_pattern=hybrid-{index}
    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=1    max_loss=0%    source=hybrid
    ${id} =    Backend Id Of    hybrid-1
    ${messages} =    Wait Until Messages Received    iotflow/devices/+/telemetry    count=2    alias=hybrid
    ${bodies} =    Evaluate
    ...    [json.loads(m['payload']) for m in $messages if m['topic'] == 'iotflow/devices/${id}/telemetry']
    ...    modules=json
    Values Should Include    body    ${bodies}[0]    metadata.deviceId=hybrid-1    metadata.seq=0
    Dictionary Should Contain Key    ${bodies}[0][data]    temperature
    Fleet Stats Should Include    ${fleet}    transport.telemetryOver=mqtt    messagesFailed=0
    [Teardown]    Run Keywords    Stop IoTFlow Test Backend    AND    Disconnect From MQTT Broker    hybrid

A Hybrid Device Needs A Backend That Hands Out MQTT Credentials
    [Documentation]    A backend without an MQTT broker answers 404 for the credentials: the device does not
    ...    run, and the reason says so.
    ${fleet} =    Create Fleet    iotflow-hybrid-sensor    name=no-mqtt    id_pattern=no-mqtt-{index}
    ...    host=${BACKEND}[host]    port=${BACKEND}[port]
    Start Fleet    ${fleet}
    ${error} =    Run Keyword And Expect Error    Fleet 'no-mqtt': 1 of 1 devices not running after 2 s*
    ...    Wait Until Fleet Is Running    ${fleet}    timeout=2s
    Should Match    ${error}    *GET ${BACKEND}[url]/api/v1/devices/mqtt-credentials failed: HTTP 404: *not configured*


*** Keywords ***
Register Someone Else As
    [Documentation]    Registers a device named ${name} at the backend, as another system would.
    [Arguments]    ${name}
    VAR    &{device}    name=${name}    device_type=sensor
    POST On Session    iotflow    /api/v1/devices/register    json=${device}    expected_status=201

Devices Should Have Registered In Order
    [Documentation]    Fails unless the devices ${names} registered at the backend in this order.
    [Arguments]    @{names}
    ${devices} =    Registered Devices
    ${created} =    Evaluate    list(map(lambda name, devices=$devices: devices[name]['created_at'], $names))
    Should Be Equal    ${created}    ${{ sorted($created) }}    devices registered out of order: ${created}
