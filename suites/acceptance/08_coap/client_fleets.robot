*** Settings ***
Documentation       CoAP client fleets against the local CoAP server: confirmable POSTs and non-confirmable CBOR PUTs,
...                 Telemetry Should Be Received From Fleet and the Metrics keywords with the CoAP receivers, a
...                 batch launch, a dropout with reconnect, and a target that does not answer (counted failures
...                 with the reason, never a hang, while a fleet with a working target keeps delivering).
Resource            coap.resource

Suite Setup         Start Acceptance Environment
Suite Teardown      Stop Acceptance Environment
Test Setup          Start CoAP Test Server
Test Teardown       Stop CoAP Test Server


*** Test Cases ***
Confirmable Readings Arrive At The Local CoAP Server
    [Documentation]    Each reading is a CON POST of the JSON envelope; the server's answer (2.04) counts as
    ...    acknowledged. The local server is the default receiver of a CoAP fleet.
    ${fleet} =    Start CoAP Fleet    acceptance-coap-sensor    count=3    name=con    id_pattern=con-{index}
    ${report} =    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=3    max_loss=0%
    Values Should Include    report    ${report}    devices=3    lost=0    duplicates=0    invalidMessages=0
    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=3    source=coap
    ${stats} =    Get Fleet Stats    ${fleet}
    Values Should Include    stats    ${stats}    protocol=coap    target=${COAP}[url]    messagesFailed=0
    ...    transport.mode=client    transport.confirmable=True
    Should Be True    ${stats}[messagesAcked] >= 9
    Should Be True    ${stats}[transport][requestLatencyMs][count] >= 9

Each Reading Is A Request To The Device's Path
    [Documentation]    The model's path (/telemetry/${deviceId}) and the JSON content format reach the server,
    ...    which knows each request's device from its envelope.
    Start CoAP Fleet    acceptance-coap-sensor    count=2    name=paths    id_pattern=paths-{index}
    Wait Until Keyword Succeeds    10s    100ms    Device Should Have Sent More Than    paths-1    2
    ${records} =    Get CoAP Requests Received    path=/telemetry/paths-1
    Values Should Include    request    ${records}[0]    method=POST    contentFormat=50    deviceId=paths-1
    Values Should Include    envelope    ${{ json.loads($records[0]['payload']) }}    deviceId=paths-1    seq=0
    ${of device} =    Get CoAP Requests Received    device_id=paths-0
    Should Be True    len($of_device) >= 3
    Should Be Equal    ${{ {r['path'] for r in $of_device} }}    ${{ {'/telemetry/paths-0'} }}

The Metrics Keywords Read The CoAP Receivers
    [Documentation]    Get Telemetry Report, Latency Should Be Below and Export Telemetry Report take source=coap
    ...    like an MQTT alias.
    ${fleet} =    Start CoAP Fleet    acceptance-coap-sensor    count=2    name=measured    id_pattern=measured-{index}
    Wait Until Fleet Has Sent    ${fleet}    6
    ${report} =    Get Telemetry Report    ${fleet}    source=coap
    Values Should Include    report    ${report}    devices=2    lost=0    silentDevices=0
    ${p99} =    Latency Should Be Below    ${fleet}    10s    source=coap
    Should Be True    0 <= ${p99} < 10000
    Export Telemetry Report    ${fleet}    ${WORKDIR}/coap-report.json    source=coap
    ${exported} =    Evaluate    json.loads(pathlib.Path($WORKDIR, 'coap-report.json').read_text())
    ...    modules=json,pathlib
    Should Be Equal    ${exported}[fleet][protocol]    coap

Non-Confirmable PUTs Carry CBOR
    [Documentation]    A NON fleet fires and forgets (nothing is acknowledged); the model's method (PUT), path and
    ...    payload format (CBOR, content format 60) reach the server, which decodes the envelopes.
    ${fleet} =    Start CoAP Fleet    acceptance-coap-put-cbor    count=2    name=non    id_pattern=non-{index}
    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=3    max_loss=0%
    ${records} =    Get CoAP Requests Received    path=/sensors/non-0/state
    Values Should Include    request    ${records}[0]    method=PUT    contentFormat=60    deviceId=non-0
    ${envelope} =    Evaluate    cbor2.loads(bytes.fromhex($records[0]['payload']))    modules=cbor2
    Values Should Include    envelope    ${envelope}    deviceId=non-0    seq=0
    Fleet Stats Should Include    ${fleet}    messagesAcked=0    messagesFailed=0    transport.confirmable=False
    ...    transport.method=PUT

A Batch Launch Starts The Fleet In Steps
    [Documentation]    6 devices in batches of 2 every 500 ms: the last batch starts 1 s after the first, and
    ...    every reading of every device arrives.
    ${fleet} =    Create Fleet    acceptance-coap-sensor    count=6    name=batches    id_pattern=batches-{index}
    ...    host=${COAP}[host]    port=${COAP}[port]
    ${t0} =    Now
    Start Fleet    ${fleet}    strategy=batch    batch_size=2    delay=500ms
    ${running} =    Get Devices    ${fleet}    state=running
    Should Be True    len($running) < 6    all devices ran right after Start Fleet: ${running}
    Wait Until Fleet Is Running    ${fleet}    timeout=20s
    ${elapsed} =    Seconds Since    ${t0}
    Should Be True    0.95 <= ${elapsed} < 20    the last batch ran after ${elapsed} s, expected about 1 s
    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=3    max_loss=0%

A CoAP Fleet Recovers From A Dropout
    [Documentation]    Dropped client devices stop sending; with reconnect they are back after reconnect_delay
    ...    and go on with their sequence numbers: nothing sent is lost.
    ${fleet} =    Start CoAP Fleet    acceptance-coap-sensor    count=5    name=dropout    id_pattern=dropout-{index}
    ${dropped} =    Drop Devices    ${fleet}    strategy=immediate    count=2    seed=4    reconnect=True
    ...    reconnect_delay=3s
    Length Should Be    ${dropped}    2
    Dropped Device Should Be Silent    ${dropped}[0]
    Wait Until Dropout Is Complete    ${fleet}    timeout=15s
    Wait Until Fleet Is Running    ${fleet}    timeout=10s
    Fleet Stats Should Include    ${fleet}    runningDeviceCount=5    disconnects=2    reconnects=2
    ${before} =    Get Device Status    ${dropped}[0]
    Wait Until Keyword Succeeds    10s    100ms    Device Should Have Sent More Than    ${dropped}[0]
    ...    ${before}[messagesSent]
    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=5    max_loss=0%

A Target That Does Not Answer Is Counted, Not Waited For
    [Documentation]    Exchanges with a port nobody listens on time out after the model's retransmissions
    ...    (ACK timeout 200 ms, one retransmission); each is a failure with the reason. The devices keep
    ...    running and the fleet stops at once.
    ${closed} =    Free UDP Port
    ${void} =    Start Unanswered Fleet    void    ${closed}
    Wait Until Fleet Has Failed    ${void}    4
    ${status} =    Get Device Status    void-0
    Should Match    ${status}[lastError]
    ...    CoAP POST coap://127.0.0.1:${closed}/telemetry/void-0: timeout, no ACK after 2 transmissions in * s*
    Fleet Stats Should Include    ${void}    messagesAcked=0    runningDeviceCount=2
    ${t0} =    Now
    Stop Fleet    ${void}
    ${elapsed} =    Seconds Since    ${t0}
    Should Be True    ${elapsed} < 10    Stop Fleet took ${elapsed} s

A Failing Fleet Does Not Disturb A Working One
    [Documentation]    Next to a fleet whose target does not answer, a fleet with a working target delivers
    ...    everything; the telemetry check of the failing one fails the way it does for MQTT fleets.
    ${void} =    Start Unanswered Fleet    unanswered
    ${working} =    Start CoAP Fleet    acceptance-coap-sensor    count=2    name=working    id_pattern=working-{index}
    Wait Until Fleet Has Failed    ${void}    2
    ${error} =    Run Keyword And Expect Error
    ...    Fleet 'unanswered' lost * of * messages (100.00 %), more than the allowed 0 %*
    ...    Telemetry Should Be Received From Fleet    ${void}    timeout=1s
    Should End With    ${error}    [receiver 'coap'].
    Telemetry Should Be Received From Fleet    ${working}    min_messages=5    max_loss=0%
    Fleet Stats Should Include    ${working}    messagesFailed=0

An Unknown Source Lists The Receivers
    [Documentation]    source= names a receiver; one that does not exist fails and lists the ones there are.
    ${fleet} =    Start CoAP Fleet    acceptance-coap-sensor    name=unknown    id_pattern=unknown-{index}
    Run Keyword And Expect Error    No receiver named 'nope' (available: 'default', 'coap'); *
    ...    Telemetry Should Be Received From Fleet    ${fleet}    source=nope
    Run Keyword And Expect Error    No receiver named 'observe:nope' (available: 'default', 'coap'); *
    ...    Get Telemetry Report    ${fleet}    source=observe:nope

A CoAP Fleet Has No Default Receiver Without A CoAP Receiver
    [Documentation]    Without a local CoAP server or an observation a CoAP fleet has no default receiver: the
    ...    MQTT receiver cannot have seen its readings.
    ${fleet} =    Start CoAP Fleet    acceptance-coap-sensor    name=orphan    id_pattern=orphan-{index}
    Stop Local CoAP Server
    Run Keyword And Expect Error
    ...    Fleet 'orphan' (coap): no CoAP receiver collects its telemetry (available: 'default'); start a local*
    ...    Telemetry Should Be Received From Fleet    ${fleet}
    Run Keyword And Expect Error    Fleet 'orphan' (coap): no CoAP receiver collects its telemetry*
    ...    Get Telemetry Report    ${fleet}
    Run Keyword And Expect Error    No receiver named 'coap' (available: 'default'); *
    ...    Telemetry Should Be Received From Fleet    ${fleet}    source=coap

Several Observations Are No Default Receiver
    [Documentation]    With two observations and no local server, which one counts must be said with source=.
    ${fleet} =    Start CoAP Fleet    acceptance-coap-sensor    name=undecided    id_pattern=undecided-{index}
    Stop Local CoAP Server
    Start Server Mode Fleet    acceptance-coap-plug    count=2    name=plugs    id_pattern=plugs-{index}
    ${one} =    Device URL    plugs-0
    ${two} =    Device URL    plugs-1
    Observe CoAP Resource    ${one}/telemetry    alias=one
    Observe CoAP Resource    ${two}/telemetry    alias=two
    Run Keyword And Expect Error
    ...    Fleet 'undecided' (coap): several CoAP observations could have collected its telemetry *
    ...    Telemetry Should Be Received From Fleet    ${fleet}
    [Teardown]    Stop CoAP Test Server    one    two


*** Keywords ***
Start Unanswered Fleet
    [Documentation]    Starts 2 devices of the fast CoAP model named ${name}-0, ${name}-1 against ${port} of
    ...    127.0.0.1, where nobody answers (default: a free port). Returns the fleet name.
    [Arguments]    ${name}    ${port}=${None}
    IF    $port is None
        ${port} =    Free UDP Port
    END
    # Every reading is one exchange and a failing device stays running: what these tests count (retries,
    # the circuit breaker and the error state are covered in 09_http/resilience.robot and the pytest suite).
    ${fleet} =    Create Fleet    acceptance-coap-sensor    count=2    name=${name}    id_pattern=${name}-{index}
    ...    host=127.0.0.1    port=${port}    max_retries=0    circuit_threshold=0    error_threshold=0
    Start Fleet    ${fleet}
    Wait Until Fleet Is Running    ${fleet}
    RETURN    ${fleet}

Device Should Have Sent More Than
    [Documentation]    Fails unless device ${device_id} has sent more than ${count} messages.
    [Arguments]    ${device_id}    ${count}
    ${status} =    Get Device Status    ${device_id}
    Should Be True    ${status}[messagesSent] > ${count}
