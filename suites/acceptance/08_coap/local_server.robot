*** Settings ***
Documentation       Start Local CoAP Server, Stop Local CoAP Server and Get CoAP Requests Received, fed by CoAP POST
...                 and CoAP PUT and by coap-client-notls (libcoap) as an independent client. Each test starts a
...                 server of its own and stops it in its teardown.
Resource            coap.resource

Suite Setup         Start Acceptance Environment
Suite Teardown      Stop Acceptance Environment
Test Setup          Start CoAP Test Server
Test Teardown       Stop CoAP Test Server


*** Test Cases ***
Start Local CoAP Server Returns Its Address
    [Documentation]    host, port and url of a server that answers; a second start returns the running server.
    Values Should Include    server    ${COAP}    host=127.0.0.1
    Should Be True    0 < ${COAP}[port] < 65536
    Should Be Equal    ${COAP}[url]    coap://127.0.0.1:${COAP}[port]
    ${again} =    Start Local CoAP Server
    Should Be Equal    ${again}    ${COAP}
    ${summary} =    CoAP GET    ${COAP}[url]/anything
    Values Should Include    GET    ${summary}    code=2.05    ok=True
    Should Be Equal    ${{ json.loads($summary['payload']) }}    ${{ {'requests': 0, 'paths': 0} }}

Posted And Put Requests Are Recorded Per Path
    [Documentation]    The server answers 2.04 Changed and keeps path, method, payload and content format of each
    ...    request, per path, oldest first.
    ${answer} =    CoAP POST    ${COAP}[url]/acceptance/a    {"hello": "coap"}
    Values Should Include    POST    ${answer}    code=2.04    ok=True
    CoAP PUT    ${COAP}[url]/acceptance/b    plain words    content_format=text
    CoAP POST    ${COAP}[url]/acceptance/a    {"second": true}
    ${a} =    Get CoAP Requests Received    path=/acceptance/a
    Values Should Include    first request    ${a}[0]    path=/acceptance/a    method=POST    contentFormat=50
    ...    payload={"hello": "coap"}    deviceId=None
    ${b} =    Get CoAP Requests Received    path=acceptance/b
    Values Should Include    PUT request    ${b}[0]    method=PUT    contentFormat=0    payload=plain words
    ${all} =    Get CoAP Requests Received
    Should Be Equal    ${{ [r['path'] for r in $all] }}    ${{ ['/acceptance/a', '/acceptance/b', '/acceptance/a'] }}

Requests Can Be Picked By Path And Device
    [Documentation]    device_id= picks the requests whose payload is an IoTix envelope of that device; path= and
    ...    device_id= combine; a path nothing was sent to has no requests.
    CoAP POST    ${COAP}[url]/acceptance/c    {"deviceId": "probe-1", "seq": 0, "ts": 1700000000000}
    CoAP POST    ${COAP}[url]/acceptance/d    {"deviceId": "probe-1", "seq": 1, "ts": 1700000001000}
    CoAP POST    ${COAP}[url]/acceptance/c    {"deviceId": "probe-2", "seq": 0, "ts": 1700000000000}
    ${probe} =    Get CoAP Requests Received    device_id=probe-1
    Should Be Equal    ${{ [r['path'] for r in $probe] }}    ${{ ['/acceptance/c', '/acceptance/d'] }}
    ${both} =    Get CoAP Requests Received    path=/acceptance/c    device_id=probe-2
    Should Be Equal    ${{ [r['deviceId'] for r in $both] }}    ${{ ['probe-2'] }}
    ${none} =    Get CoAP Requests Received    path=/acceptance/never
    Should Be Empty    ${none}

Content Formats Are Sent As Given
    [Documentation]    json, cbor, text, octet-stream or a number; binary payloads are recorded as hex; an
    ...    unknown format is refused before anything is sent.
    CoAP POST    ${COAP}[url]/formats    ${{ b'\xa1\x61\x61\x01' }}    content_format=cbor
    CoAP POST    ${COAP}[url]/formats    raw    content_format=octet-stream
    CoAP POST    ${COAP}[url]/formats    <a/>    content_format=41
    ${records} =    Get CoAP Requests Received    path=/formats
    Should Be Equal    ${{ [r['contentFormat'] for r in $records] }}    ${{ [60, 42, 41] }}
    Should Be Equal    ${records}[0][payload]    a1616101
    Run Keyword And Expect Error
    ...    Unknown content format 'yaml': use one of json, cbor, text, octet-stream or a number.
    ...    CoAP POST    ${COAP}[url]/formats    a: 1    content_format=yaml
    ${records} =    Get CoAP Requests Received    path=/formats
    Length Should Be    ${records}    3

Requests Of coap-client-notls Are Recorded
    [Documentation]    An independent client (libcoap's coap-client) posts and puts JSON; the server records
    ...    both with their payload and content format.
    ${post} =    Run Process    coap-client-notls    -m    post    -t    application/json
    ...    -e    {"from": "libcoap", "n": 1}    ${COAP}[url]/independent/post    timeout=20s
    Should Be Equal As Integers    ${post.rc}    0    coap-client failed: ${post.stderr}
    ${put} =    Run Process    coap-client-notls    -m    put    -t    text/plain
    ...    -e    put by libcoap    ${COAP}[url]/independent/put    timeout=20s
    Should Be Equal As Integers    ${put.rc}    0    coap-client failed: ${put.stderr}
    ${posted} =    Get CoAP Requests Received    path=/independent/post
    Values Should Include    libcoap POST    ${posted}[0]    method=POST    contentFormat=50
    Should Be Equal    ${{ json.loads($posted[0]['payload']) }}    ${{ {'from': 'libcoap', 'n': 1} }}
    ${put records} =    Get CoAP Requests Received    path=/independent/put
    Values Should Include    libcoap PUT    ${put records}[0]    method=PUT    contentFormat=0    payload=put by libcoap

The Server's Keywords Need A Running Server
    [Documentation]    After Stop Local CoAP Server nothing answers on its port and Get CoAP Requests Received
    ...    fails; stopping twice is harmless.
    CoAP POST    ${COAP}[url]/before    {}
    Stop Local CoAP Server
    Stop Local CoAP Server
    Run Keyword And Expect Error    No local CoAP server is running: use Start Local CoAP Server first.
    ...    Get CoAP Requests Received
    Run Keyword And Expect Error    CoAP POST ${COAP}[url]/after: *
    ...    CoAP POST    ${COAP}[url]/after    {}    timeout=3s

A New Start Gives A Server That Has Recorded Nothing
    [Documentation]    What a stopped server recorded is gone with it.
    CoAP POST    ${COAP}[url]/before    {}
    Stop Local CoAP Server
    ${fresh} =    Start Local CoAP Server
    ${records} =    Get CoAP Requests Received
    Should Be Empty    ${records}
    CoAP POST    ${fresh}[url]/after    {}
    ${records} =    Get CoAP Requests Received
    Should Be Equal    ${{ [r['path'] for r in $records] }}    ${{ ['/after'] }}

A Port In Use Is Refused
    [Documentation]    port= asks for a given UDP port; one that another socket holds fails with the port and
    ...    the reason.
    Stop Local CoAP Server
    ${socket} =    Open Silent UDP Socket
    ${port} =    Evaluate    $socket.getsockname()[1]
    Run Keyword And Expect Error    Cannot start a local CoAP server on port ${port}: *
    ...    Start Local CoAP Server    port=${port}
    Call Method    ${socket}    close
    ${coap} =    Start Local CoAP Server    port=${port}
    Should Be Equal As Integers    ${coap}[port]    ${port}
