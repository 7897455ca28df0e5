*** Settings ***
Documentation       The generic HTTP flow against a tiny HTTP server (tiny_http_server.py, started with the Process
...                 library): the URL pattern, headers, body template and secret token of the model reach the
...                 server; a 500 storm on some devices is counted with the status and the body while the other
...                 devices keep delivering; a server that does not answer, and one that is not there, give
...                 counted failures with the reason, never a hang.
Resource            http.resource

Suite Setup         Start Acceptance Environment
Suite Teardown      Stop Acceptance Environment
Test Teardown       Stop Tiny HTTP Servers


*** Variables ***
${TOKEN: Secret}        %{IOTIX_TEST_HTTP_TOKEN=iotix-acceptance-token}
# Every reading is one request and a failing device stays running: what these tests count (resilience.robot
# covers retries, the circuit breaker and the error state).
&{NO BREAKER}           max_retries=0    circuit_threshold=0    error_threshold=0


*** Test Cases ***
The Request Is Built From The Model
    [Documentation]    Each reading is a POST to the device's URL with the model's headers and the body rendered
    ...    from bodyTemplate (numbers stay numbers); 201 counts as delivered.
    ${port} =    Start Tiny HTTP Server    --record    ${WORKDIR}/built.jsonl
    ${fleet} =    Start Generic Fleet    built    ${port}
    Wait Until Keyword Succeeds    10s    200ms    Device Should Have Delivered More Than    built-0    2
    ${requests} =    Recorded Requests    ${WORKDIR}/built.jsonl
    Values Should Include    request    ${requests}[0]    method=POST    path=/sensors/0/readings
    ...    headers.X-Device=built-0    headers.Content-Type=application/json
    ${body} =    Evaluate    json.loads($requests[0]['body'])
    Values Should Include    body    ${body}    sensor=built-0    sequence=0
    Should Be True    isinstance($body['sequence'], int) and 0 <= $body['level'] <= 10
    VAR    ${target}    http://127.0.0.1:${port}/sensors/\${index}/readings
    Fleet Stats Should Include    ${fleet}    messagesFailed=0    protocol=http    target=${target}
    ...    transport.flow=generic

A Secret Token Is Sent As A Bearer Token
    [Documentation]    Create Fleet password= (a Robot Secret) is sent as ``Authorization: Bearer <token>``. The
    ...    tiny server keeps only a hash of the header, so the token is not in the log of this test either.
    ${port} =    Start Tiny HTTP Server    --record    ${WORKDIR}/token.jsonl
    Start Generic Fleet    token    ${port}    password=${TOKEN}
    Wait Until Keyword Succeeds    10s    200ms    Device Should Have Delivered More Than    token-0    0
    ${requests} =    Recorded Requests    ${WORKDIR}/token.jsonl
    ${expected} =    Evaluate    hashlib.sha256(b'Bearer ' + $TOKEN.value.encode()).hexdigest()    modules=hashlib
    Should Be Equal    ${requests}[0][authorizationSha256]    ${expected}
    Dictionary Should Not Contain Key    ${requests}[0][headers]    Authorization

A 500 Storm Is Counted With The Status And The Body
    [Documentation]    The server answers 500 to the odd devices: each of their readings is a failure whose
    ...    reason has the status, the request and the start of the body; the devices keep running.
    ${port} =    Start Tiny HTTP Server
    ${fleet} =    Start Generic Fleet    storm    ${port}    count=4    &{NO BREAKER}
    Wait Until Fleet Has Failed    ${fleet}    6
    ${failing} =    Get Device Status    storm-1
    Should Be Equal    ${failing}[lastError]
    ...    HTTP 500 from POST http://127.0.0.1:${port}/sensors/1/readings: storm at sensor 1
    Should Be True    ${failing}[messagesFailed] >= 2 and ${failing}[messagesAcked] == 0
    Fleet Stats Should Include    ${fleet}    runningDeviceCount=4

The Other Devices Keep Delivering Through A 500 Storm
    [Documentation]    The even devices, which the server answers 201, deliver all along with no failure.
    ${port} =    Start Tiny HTTP Server
    ${fleet} =    Start Generic Fleet    calm    ${port}    count=4    &{NO BREAKER}
    Wait Until Fleet Has Failed    ${fleet}    4
    ${working} =    Get Device Status    calm-2
    Wait Until Keyword Succeeds    10s    200ms    Device Should Have Delivered More Than    calm-2
    ...    ${working}[messagesAcked]
    Device Status Should Include    calm-0    messagesFailed=0    lastError=None    state=running
    Device Status Should Include    calm-2    messagesFailed=0    lastError=None    state=running

A Server That Does Not Answer Is Counted, Not Waited For
    [Documentation]    A server that accepts connections and never answers: each request fails after the model's
    ...    timeoutMs (1 s) with the reason; the devices keep running and the fleet stops at once.
    ${port} =    Start Tiny HTTP Server    --silent
    ${fleet} =    Start Generic Fleet    mute    ${port}    count=2    &{NO BREAKER}
    Wait Until Fleet Has Failed    ${fleet}    2
    Device Status Should Include    mute-0
    ...    lastError=no answer from POST http://127.0.0.1:${port}/sensors/0/readings within 1 s
    Fleet Stats Should Include    ${fleet}    messagesAcked=0    runningDeviceCount=2
    ${t0} =    Now
    Stop Fleet    ${fleet}
    ${elapsed} =    Seconds Since    ${t0}
    Should Be True    ${elapsed} < 10    Stop Fleet took ${elapsed} s

A Server That Is Not There Is Counted
    [Documentation]    Nothing listens on the port: each request fails with "cannot connect" and the address.
    ${port} =    Free TCP Port
    ${fleet} =    Start Generic Fleet    absent    ${port}    &{NO BREAKER}
    Wait Until Fleet Has Failed    ${fleet}    2
    ${status} =    Get Device Status    absent-0
    Should Match    ${status}[lastError]
    ...    POST http://127.0.0.1:${port}/sensors/0/readings failed: cannot connect to 127.0.0.1:${port}: *
