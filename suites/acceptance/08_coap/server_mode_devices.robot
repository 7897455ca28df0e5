*** Settings ***
Documentation       CoAP devices in server mode, reached with CoAP GET, CoAP POST and CoAP PUT, watched with Observe
...                 CoAP Resource, Wait Until CoAP Notifications Received and Stop Observing CoAP Resource, and
...                 observed independently with coap-client-notls; the errors for resources that do not exist,
...                 aliases that do not exist, targets that do not answer; a dropped device that stops answering
...                 and answers again on the same port after its reconnect.
Resource            coap.resource

Suite Setup         Start Acceptance Environment
Suite Teardown      Stop Acceptance Environment
Test Teardown       Stop CoAP Test Server


*** Test Cases ***
A Server-Mode Device Lists Its Resources
    [Documentation]    Each device answers on a UDP port of its own (Get Device Status gives port and url);
    ...    /.well-known/core lists the observable telemetry resources and the command resources.
    Start Server Mode Fleet    acceptance-coap-plug    count=2    name=listing    id_pattern=listing-{index}
    ${first} =    Get Device Status    listing-0
    ${second} =    Get Device Status    listing-1
    Should Not Be Equal    ${first}[port]    ${second}[port]
    Should Be Equal    ${first}[url]    coap://127.0.0.1:${first}[port]
    ${core} =    CoAP GET    ${first}[url]/.well-known/core
    Should Be Equal    ${core}[code]    2.05
    FOR    ${link}    IN    </telemetry>    </telemetry/powerW>    </telemetry/relay>    </commands/switch>
    ...    </commands/setInterval>    </commands/reboot>
        Should Contain    ${core}[payload]    ${link}
    END
    Should Match Regexp    ${core}[payload]    </telemetry>;[^,]*\\bobs\\b

CoAP GET Reads The Latest Reading
    [Documentation]    /telemetry holds the device's latest envelope, /telemetry/<field> one field as JSON.
    Start Server Mode Fleet    acceptance-coap-plug    name=latest    id_pattern=latest-{index}
    ${url} =    Device URL    latest-0
    ${reading} =    CoAP GET    ${url}/telemetry
    Values Should Include    GET /telemetry    ${reading}    code=2.05    ok=True
    ${envelope} =    Evaluate    json.loads($reading['payload'])
    Should Be True    $envelope['deviceId'] == 'latest-0' and 10 <= $envelope['powerW'] <= 100    ${envelope}
    ${power} =    CoAP GET    ${url}/telemetry/powerW
    Should Be True    10 <= ${power}[payload] <= 100
    ${relay} =    CoAP GET    ${url}/telemetry/relay
    Should Contain Any    ${relay}[payload]    "on"    "off"

Error Codes Are Returned, Not Raised
    [Documentation]    A resource that does not exist answers 4.04, a method the resource does not take 4.05:
    ...    the keywords return the code with ok=False and the test decides.
    Start Server Mode Fleet    acceptance-coap-plug    name=codes    id_pattern=codes-{index}
    ${url} =    Device URL    codes-0
    ${missing} =    CoAP GET    ${url}/does/not/exist
    Values Should Include    GET    ${missing}    code=4.04    ok=False
    ${unknown command} =    CoAP POST    ${url}/commands/selfDestruct    {}
    Values Should Include    POST    ${unknown command}    code=4.04    ok=False
    ${wrong method} =    CoAP PUT    ${url}/commands/switch    {"state": "on"}
    Values Should Include    PUT    ${wrong method}    code=4.05    ok=False
    ${commands} =    Get Received Commands    codes-0
    Should Be Empty    ${commands}

A Command POST Is Recorded And Answered
    [Documentation]    A POST to /commands/<name> is recorded like an MQTT command (Get Received Commands) and
    ...    answered 2.04 with a JSON status.
    Start Server Mode Fleet    acceptance-coap-plug    name=command    id_pattern=command-{index}
    ${url} =    Device URL    command-0
    ${switch} =    CoAP POST    ${url}/commands/switch    {"state": "off"}
    Values Should Include    switch    ${switch}    code=2.04    ok=True
    Values Should Include    answer    ${{ json.loads($switch['payload']) }}    deviceId=command-0    command=switch
    ...    status=ok
    ${commands} =    Get Received Commands    command-0
    Length Should Be    ${commands}    1
    Values Should Include    command    ${commands}[0]    command=switch    status=ok    topic=/commands/switch
    Should Be Equal    ${commands}[0][parameters]    ${{ {'state': 'off'} }}

A setInterval Command Applies At Once
    [Documentation]    setInterval 60 s makes the device go quiet at once; a value the device rejects is
    ...    answered 4.00 and recorded with status error.
    Start Server Mode Fleet    acceptance-coap-plug    name=interval    id_pattern=interval-{index}
    ${url} =    Device URL    interval-0
    ${slow} =    CoAP POST    ${url}/commands/setInterval    {"intervalMs": 60000}
    Should Be Equal    ${slow}[code]    2.04
    ${readings} =    Readings In    interval-0    1500ms
    Should Be Equal As Integers    ${readings}    0
    ${rejected} =    CoAP POST    ${url}/commands/setInterval    {"intervalMs": 1}
    Values Should Include    setInterval    ${rejected}    code=4.00    ok=False
    ${commands} =    Get Received Commands    interval-0
    Should Be Equal    ${{ [c['status'] for c in $commands] }}    ${{ ['ok', 'error'] }}

An Observation Collects Every Reading In The Background
    [Documentation]    Observe CoAP Resource returns at once; each reading becomes a notification (the first is
    ...    the answer to the GET), in order and none twice.
    Start Server Mode Fleet    acceptance-coap-plug    name=watched    id_pattern=watched-{index}
    ${url} =    Device URL    watched-0
    Observe CoAP Resource    ${url}/telemetry    alias=watched
    ${notes} =    Wait Until CoAP Notifications Received    watched    count=4    timeout=10s
    Should Be True    len($notes) >= 4
    Values Should Include    notification    ${notes}[0]    code=2.05    ok=True
    ${seqs} =    Evaluate    [json.loads(n['payload'])['seq'] for n in $notes]    modules=json
    Should Be Equal    ${seqs}    ${{ sorted(set($seqs)) }}    notifications in order, none twice: ${seqs}
    [Teardown]    Stop CoAP Test Server    watched

An Observation Is A Receiver Of Telemetry
    [Documentation]    Notifications are IoTix envelopes, so an observation is a receiver: source=observe:<alias>,
    ...    and the default one for a CoAP fleet when it is the only CoAP receiver; the Metrics keywords
    ...    take it too.
    ${fleet} =    Start Server Mode Fleet    acceptance-coap-plug    name=receiver    id_pattern=receiver-{index}
    ${url} =    Device URL    receiver-0
    Observe CoAP Resource    ${url}/telemetry    alias=receiver
    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=3    source=observe:receiver
    ${report} =    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=3
    Values Should Include    report    ${report}    devices=1    lost=0    duplicates=0
    ${metrics} =    Get Telemetry Report    ${fleet}    source=observe:receiver
    Values Should Include    metrics    ${metrics}    devices=1    silentDevices=0
    [Teardown]    Stop CoAP Test Server    receiver

A Field Resource Can Be Observed
    [Documentation]    /telemetry/<field> notifies with the field's value (JSON) at each reading; Stop Observing
    ...    CoAP Resource ends the observation and frees the alias (stopping twice is harmless).
    Start Server Mode Fleet    acceptance-coap-plug    name=field    id_pattern=field-{index}
    ${url} =    Device URL    field-0
    Observe CoAP Resource    ${url}/telemetry/powerW    alias=power
    ${notes} =    Wait Until CoAP Notifications Received    power    count=3
    Should Be True    all(10 <= float(n['payload']) <= 100 for n in $notes)    ${notes}
    Stop Observing CoAP Resource    power
    Stop Observing CoAP Resource    power
    Run Keyword And Expect Error    No CoAP observation 'power' *
    ...    Wait Until CoAP Notifications Received    power
    Observe CoAP Resource    ${url}/telemetry/relay    alias=power
    [Teardown]    Stop CoAP Test Server    power

Waiting For More Notifications Than Arrive Fails With The Counts
    [Documentation]    The failure names the resource, the alias, the timeout and how many arrived.
    Start Server Mode Fleet    acceptance-coap-plug    name=few    id_pattern=few-{index}
    ${url} =    Device URL    few-0
    CoAP POST    ${url}/commands/setInterval    {"intervalMs": 60000}
    Observe CoAP Resource    ${url}/telemetry    alias=few
    Run Keyword And Expect Error
    ...    Expected 5 notification(s) of ${url}/telemetry (alias 'few') within 1 s, got 1.
    ...    Wait Until CoAP Notifications Received    few    count=5    timeout=1s
    [Teardown]    Stop CoAP Test Server    few

Observation Errors Name The Alias Or The Resource
    [Documentation]    An unknown alias lists the observations; an alias is used once; a resource that is not
    ...    observable, or does not exist, is refused with the code it answered.
    ${fleet} =    Start Server Mode Fleet    acceptance-coap-plug    name=errors    id_pattern=errors-{index}
    ${url} =    Device URL    errors-0
    Run Keyword And Expect Error    No CoAP observation 'ghost' (observations: none); use Observe CoAP Resource.
    ...    Wait Until CoAP Notifications Received    ghost
    Observe CoAP Resource    ${url}/telemetry    alias=taken
    Run Keyword And Expect Error    No CoAP observation 'ghost' (observations: 'taken'); use Observe CoAP Resource.
    ...    Wait Until CoAP Notifications Received    ghost
    Run Keyword And Expect Error    Observation alias 'taken' is in use (${url}/telemetry).
    ...    Observe CoAP Resource    ${url}/telemetry/powerW    alias=taken
    Run Keyword And Expect Error    ${url}/.well-known/core is not observable (answered 2.05 without Observe)
    ...    Observe CoAP Resource    ${url}/.well-known/core    alias=core
    Run Keyword And Expect Error    ${url}/nothing/here is not observable (answered 4.04 without Observe)
    ...    Observe CoAP Resource    ${url}/nothing/here    alias=nothing
    Run Keyword And Expect Error    No receiver named 'observe:core' (available: *'observe:taken'*
    ...    Telemetry Should Be Received From Fleet    ${fleet}    source=observe:core
    [Teardown]    Stop CoAP Test Server    taken    core    nothing

A Port Nobody Listens On Fails At Once
    [Documentation]    Requests to a closed port are refused (ICMP): the keywords fail with the URI and the reason
    ...    instead of waiting; a URI must be coap://.
    ${closed} =    Free UDP Port
    Run Keyword And Expect Error    CoAP GET coap://127.0.0.1:${closed}/telemetry: no answer: *
    ...    CoAP GET    coap://127.0.0.1:${closed}/telemetry    timeout=5s
    Run Keyword And Expect Error    CoAP observe coap://127.0.0.1:${closed}/telemetry: no answer: *
    ...    Observe CoAP Resource    coap://127.0.0.1:${closed}/telemetry    alias=closed    timeout=5s
    Run Keyword And Expect Error    No CoAP observation 'closed' *
    ...    Wait Until CoAP Notifications Received    closed
    Run Keyword And Expect Error    CoAP URI must start with coap://, got 'http://127.0.0.1/telemetry'
    ...    CoAP GET    http://127.0.0.1/telemetry

A Target That Does Not Answer Fails When The Timeout Is Up
    [Documentation]    A socket that swallows requests: the keywords fail after their timeout, and not much later.
    ${silent} =    Open Silent UDP Socket
    ${uri} =    Evaluate    'coap://127.0.0.1:%d' % $silent.getsockname()[1]
    ${t0} =    Now
    Run Keyword And Expect Error    CoAP POST ${uri}/commands/switch: timeout, no response within 1 s
    ...    CoAP POST    ${uri}/commands/switch    {}    timeout=1s
    ${elapsed} =    Seconds Since    ${t0}
    Should Be True    1 <= ${elapsed} < 10    the request failed after ${elapsed} s, expected about 1 s
    Run Keyword And Expect Error    CoAP observe ${uri}/telemetry: timeout, no response within 1 s
    ...    Observe CoAP Resource    ${uri}/telemetry    alias=silent    timeout=1s
    [Teardown]    Close Socket And Stop CoAP Test Server    ${silent}

Libcoap Observes A Device
    [Documentation]    An independent client: libcoap's coap-client-notls observes /telemetry for 3 s and gets
    ...    the device's readings.
    Start Server Mode Fleet    acceptance-coap-plug    name=libcoap    id_pattern=libcoap-{index}
    ${url} =    Device URL    libcoap-0
    ${observed} =    Run Process    coap-client-notls    -m    get    -s    3    ${url}/telemetry    timeout=30s
    Should Be Equal As Integers    ${observed.rc}    0    coap-client failed: ${observed.stderr}
    ${readings} =    Get Regexp Matches    ${observed.stdout}    "deviceId":"libcoap-0","seq":(\\d+)    1
    Should Be True    len($readings) >= 3    coap-client saw ${readings}: ${observed.stdout}

Libcoap Sends A Device A Command
    [Documentation]    A POST of coap-client-notls to /commands/switch is answered and recorded by the device.
    Start Server Mode Fleet    acceptance-coap-plug    name=libcoap-cmd    id_pattern=libcoap-cmd-{index}
    ${url} =    Device URL    libcoap-cmd-0
    ${command} =    Run Process    coap-client-notls    -m    post    -t    application/json
    ...    -e    {"state": "on"}    ${url}/commands/switch    timeout=20s
    Should Be Equal As Integers    ${command.rc}    0    coap-client failed: ${command.stderr}
    Should Contain    ${command.stdout}    "command":"switch"
    ${commands} =    Get Received Commands    libcoap-cmd-0
    Values Should Include    command    ${commands}[0]    command=switch    status=ok
    Should Be Equal    ${commands}[0][parameters]    ${{ {'state': 'on'} }}

A Dropped Server-Mode Device Stops Answering
    [Documentation]    A dropout closes the device's socket: requests get no answer, while the other device
    ...    answers all along.
    ${fleet} =    Start Server Mode Fleet    acceptance-coap-plug    count=2    name=flaky    id_pattern=flaky-{index}
    ${url} =    Device URL    flaky-0
    ${dropped} =    Drop Devices    ${fleet}    strategy=immediate    count=1    seed=1
    Should Be Equal    ${dropped}    ${{ ['flaky-0'] }}
    Wait Until Device Is In State    flaky-0    dropped    timeout=2s
    Run Keyword And Expect Error    CoAP GET ${url}/telemetry: *
    ...    CoAP GET    ${url}/telemetry    timeout=1s
    ${other} =    Device URL    flaky-1
    ${still} =    CoAP GET    ${other}/telemetry
    Should Be Equal    ${still}[code]    2.05

A Dropped Server-Mode Device Comes Back On Its Port
    [Documentation]    After reconnect_delay the device listens on the same port again, answers, can be observed,
    ...    and goes on with its sequence numbers.
    ${fleet} =    Start Server Mode Fleet    acceptance-coap-plug    name=comeback    id_pattern=comeback-{index}
    ${before} =    Get Device Status    comeback-0
    Drop Devices    ${fleet}    strategy=immediate    count=1    reconnect=True    reconnect_delay=2s
    Wait Until Device Is In State    comeback-0    running    timeout=15s
    ${after} =    Device Status Should Include    comeback-0    port=${before}[port]    reconnects=1
    ${again} =    CoAP GET    ${after}[url]/telemetry
    Values Should Include    GET after the reconnect    ${again}    code=2.05
    Observe CoAP Resource    ${after}[url]/telemetry    alias=back
    ${notes} =    Wait Until CoAP Notifications Received    back    count=3
    Should Be True    ${{ json.loads($notes[-1]['payload'])['seq'] }} >= ${before}[nextSeq]
    [Teardown]    Stop CoAP Test Server    back


*** Keywords ***
Close Socket And Stop CoAP Test Server
    [Documentation]    Closes ${socket} and does what Stop CoAP Test Server does.
    [Arguments]    ${socket}
    Call Method    ${socket}    close
    Stop CoAP Test Server
