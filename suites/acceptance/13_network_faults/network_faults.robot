*** Settings ***
Documentation       Network faults between fleets and the local broker, as the other side sees them: latency at an
...                 independent receiver, a partition whose last wills the broker publishes, packets dropped inside
...                 MQTT, an outage and the recovery after it, link profiles, a standalone fault proxy, and the
...                 errors bad input gets (which leave active faults and running devices alone).
Resource            ../acceptance.resource

Suite Setup         Start Acceptance Environment
Suite Teardown      Stop Acceptance Environment
Test Teardown       Delete All Fleets


*** Variables ***
${TELEMETRY}    iotix/acceptance-sensor/+/telemetry
${WILLS}        iotix/acceptance-sensor/+/status


*** Test Cases ***
Upstream Latency Shows At An Independent Receiver
    [Documentation]    200 ms upstream: the end-to-end latency the receiver measures rises by 200 ms (10 % + 5 ms).
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=3    name=slow    id_pattern=slow-{index}
    ${base} =    Median Latency At A New Receiver    ${fleet}    before
    ${fault} =    Add Network Fault    ${fleet}    latency    latency=200ms    direction=upstream
    ${slow} =    Median Latency At A New Receiver    ${fleet}    after
    Should Be True    175 <= ${slow} - ${base} <= 225
    ...    the median latency went from ${base} ms to ${slow} ms with 200 ms of upstream latency
    ${faults} =    Get Network Faults    ${fleet}
    Should Be Equal    ${faults}[0][name]    ${fault}
    Should Be True    ${faults}[0][packets_delayed] > 0

A Partition Fires Exactly The Wills Of The Devices Cut Off
    [Documentation]    3 of 10 devices partitioned (keep-alive 10 s): the broker publishes exactly their last
    ...    wills within 1.5 x keep-alive plus a margin, while the others keep sending; after healing every
    ...    partitioned device runs again and sends.
    Open Receiver    wills    ${WILLS}
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=10    name=cut    id_pattern=cut-{index}
    ${cut} =    Partition Devices    ${fleet}    percentage=30    seed=5
    Length Should Be    ${cut}    3
    Wills Should Come From    ${cut}    wills    within=${{ 1.5 * 10 + 6 }}
    ${kept} =    Evaluate    sorted({'cut-%d' % i for i in range(10)} - set($cut))[0]
    Device Should Keep Its Rate    ${kept}
    Heal Partition    ${fleet}
    Wait Until Fleet Is Running    ${fleet}    timeout=30s
    Every Device Should Send    ${cut}
    [Teardown]    Delete Fleets And Disconnect    wills

Dropped PUBLISH Packets Are Loss The Receiver Measures
    [Documentation]    10 % of the PUBLISH packets of a QoS 0 fleet are dropped inside the MQTT stream: the
    ...    receiver's loss is about 10 % (binomial bound) and the fault counted the packets it dropped.
    Open Receiver    lossy    ${TELEMETRY}
    ${fleet} =    Create Local Fleet    acceptance-sensor    count=5    name=lossy    id_pattern=lossy-{index}
    ...    qos=0
    Add MQTT Fault    ${fleet}    PUBLISH    drop    probability=10%    direction=upstream
    Start Fleet    ${fleet}
    Wait Until Fleet Has Sent    ${fleet}    400
    Stop Fleet    ${fleet}
    ${report} =    Get Telemetry Report    ${fleet}    source=lossy    timeout=3s
    ${faults} =    Get Network Faults    ${fleet}
    Should Be Equal As Integers    ${report}[lost]    ${faults}[0][packets_dropped]
    Should Be True    5 <= ${report}[lossPercent] <= 15    loss ${report}[lossPercent] % with 10 % dropped
    [Teardown]    Delete Fleets And Disconnect    lossy

The Fleet Recovers From An Outage Of Its Target
    [Documentation]    Take Target Down (refuse) resets the connections and refuses new ones; the devices
    ...    reconnect with backoff once the target is up, and their QoS 1 readings of the outage are delivered.
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=5    name=down    id_pattern=down-{index}
    ...    reconnect_base=200ms    reconnect_cap=1s
    Take Target Down    ${fleet}    mode=refuse
    Wait Until Device Is In State    down-0    reconnecting    timeout=5s
    Outage Should Have Reset    ${fleet}    5
    Bring Target Up    ${fleet}
    Wait Until Fleet Is Running    ${fleet}    timeout=30s
    ${stats} =    Wait Until Keyword Succeeds    15s    200ms
    ...    Fleet Stats Should Include    ${fleet}    messagesQueued=0    messagesDropped=0
    Should Be True    ${stats}[reconnects] >= 5
    Wait Until Keyword Succeeds    15s    200ms    Everything Sent Is Acknowledged    ${fleet}

A Link Profile Adds Its Latency And Bandwidth
    [Documentation]    Apply Network Profile 3g adds a latency fault both ways and a bandwidth fault each way;
    ...    the median latency at the receiver is at least the profile's one-way latency.
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=2    name=mobile    id_pattern=mobile-{index}
    ${names} =    Apply Network Profile    ${fleet}    3g
    Length Should Be    ${names}    3
    ${median} =    Median Latency At A New Receiver    ${fleet}    mobile    limit=3s
    ${faults} =    Get Network Faults    ${fleet}
    Length Should Be    ${faults}    3
    ${latency} =    Evaluate    next(f for f in $faults if f['kind'] == 'latency')
    Should Be True    ${median} >= ${latency}[settings][latency] * 900
    ...    median ${median} ms on a 3g link of ${latency}[summary] one way

A Standalone Proxy Puts Faults In Front Of Any Address
    [Documentation]    A test client connects through a fault proxy; an outage of the proxy's target refuses
    ...    it, and after Bring Target Up it connects and its messages pass, 300 ms later with latency.
    ${proxy} =    Start Network Fault Proxy    upstream=${BROKER}[host]:${BROKER}[port]    name=broker-link
    Take Target Down    broker-link    mode=refuse
    Run Keyword And Expect Error    *refused*
    ...    Connect To MQTT Broker    ${proxy}[host]    ${proxy}[port]    alias=through
    Bring Target Up    broker-link
    Connect To MQTT Broker    ${proxy}[host]    ${proxy}[port]    alias=through
    Subscribe To Topic    proxy/test    qos=1    alias=through
    Add Network Fault    broker-link    latency    latency=300ms    direction=downstream
    ${elapsed} =    Seconds For A Round Trip    proxy/test    through
    Should Be True    ${elapsed} >= 0.3    the message came back after ${elapsed} s through 300 ms of latency
    [Teardown]    Run Keywords    Disconnect From MQTT Broker    through
    ...    AND    Stop Network Fault Proxy    broker-link

Bad Fault Settings Fail Clearly And Change Nothing
    [Documentation]    Every bad input names the fault and the target; the fault already active and the
    ...    running devices are untouched.
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=2    name=bad    id_pattern=bad-{index}
    Add Network Fault    ${fleet}    latency    latency=10ms    name=kept
    Bad Faults Should Fail    ${fleet}
    Only Fault Should Be    ${fleet}    kept
    Device Should Be In State    bad-0    running
    Remove Network Fault    ${fleet}    kept
    Run Keyword And Expect Error    *kept*    Remove Network Fault    ${fleet}    kept


*** Keywords ***
Median Latency At A New Receiver
    [Documentation]    Opens receiver ${alias}, lets ${fleet} send 30 more readings and returns their median
    ...    end-to-end latency (ms) at that receiver, which is then disconnected.
    [Arguments]    ${fleet}    ${alias}    ${limit}=2s
    Open Receiver    ${alias}    ${TELEMETRY}
    ${stats} =    Get Fleet Stats    ${fleet}
    Wait Until Fleet Has Sent    ${fleet}    ${{ ${stats}[messagesSent] + 30 }}
    ${median} =    Latency Should Be Below    ${fleet}    ${limit}    percentile=50    source=${alias}
    Disconnect From MQTT Broker    ${alias}
    RETURN    ${median}

Wills Should Come From
    [Documentation]    Waits up to ${within} seconds for the last wills at receiver ${alias} and fails unless
    ...    they come from exactly the devices ${expected}.
    [Arguments]    ${expected}    ${alias}    ${within}
    ${n} =    Get Length    ${expected}
    Wait Until Messages Received    ${WILLS}    count=${n}    timeout=${within}s    alias=${alias}
    ${wills} =    Get Received Messages    ${WILLS}    alias=${alias}
    ${senders} =    Evaluate    sorted(json.loads(m['payload'])['deviceId'] for m in $wills)    modules=json
    Should Be Equal    ${senders}    ${{ sorted($expected) }}

Every Device Should Send
    [Documentation]    Fails unless each of ${devices} hands at least one reading to its transport in 600 ms.
    [Arguments]    ${devices}
    FOR    ${device}    IN    @{devices}
        ${after} =    Readings In    ${device}    600ms
        Should Be True    ${after} >= 1    ${device} sent nothing in 600 ms
    END

Seconds For A Round Trip
    [Documentation]    Publishes a message to ${topic} over connection ${alias} (subscribed to it) and returns the
    ...    seconds until it came back.
    [Arguments]    ${topic}    ${alias}
    ${t0} =    Now
    Publish MQTT Message    ${topic}    hello    qos=1    alias=${alias}
    Wait Until Messages Received    ${topic}    count=1    timeout=5s    alias=${alias}
    ${elapsed} =    Seconds Since    ${t0}
    RETURN    ${elapsed}

Device Should Keep Its Rate
    [Documentation]    Fails unless ${device} (5 readings a second) hands at least 4 readings to its transport in 1 s.
    [Arguments]    ${device}
    ${readings} =    Readings In    ${device}    1s
    Should Be True    ${readings} >= 4    ${device}, not cut off, sent only ${readings} readings in 1 s

Outage Should Have Reset
    [Documentation]    Fails unless the outage of ${fleet} is its fault and reset at least ${count} connections.
    [Arguments]    ${fleet}    ${count}
    ${faults} =    Get Network Faults    ${fleet}
    Should Be Equal    ${faults}[0][kind]    outage
    Should Be True    ${faults}[0][connections_reset] >= ${count}    ${faults}

Only Fault Should Be
    [Documentation]    Fails unless ${fleet} has exactly one network fault, named ${name}.
    [Arguments]    ${fleet}    ${name}
    ${faults} =    Get Network Faults    ${fleet}
    Length Should Be    ${faults}    1
    Should Be Equal    ${faults}[0][name]    ${name}

Bad Faults Should Fail
    [Documentation]    Every bad fault for ${fleet} fails with a message that names the fault, the target and the
    ...    setting.
    [Arguments]    ${fleet}
    Adding Should Fail    *unknown kind 'lag'*latency*    ${fleet}    lag
    Adding Should Fail    *fleet 'bad': latency must be >\= 0, got '-5ms'*    ${fleet}    latency    latency=-5ms
    Adding Should Fail    *No fleet or network fault proxy named 'nope'*    nope    latency    latency=1ms
    Adding Should Fail    *TCP*retransmi*latency*    ${fleet}    loss    probability=5%
    Run Keyword And Expect Error    *probability*150%*
    ...    Add MQTT Fault    ${fleet}    PUBLISH    drop    probability=150%
    VAR    ${mode}    melt    # a variable: robot --dryrun would convert a literal value and fail the test
    Run Keyword And Expect Error    *mode*melt*refuse*    Take Target Down    ${fleet}    mode=${mode}

Adding Should Fail
    [Documentation]    Add Network Fault with the given arguments must fail with an error matching ${pattern}.
    [Arguments]    ${pattern}    @{args}    &{settings}
    Run Keyword And Expect Error    ${pattern}    Add Network Fault    @{args}    &{settings}

Everything Sent Is Acknowledged
    [Documentation]    Fails unless every message ${fleet} sent was acknowledged by the broker.
    [Arguments]    ${fleet}
    ${stats} =    Get Fleet Stats    ${fleet}
    Should Be Equal As Integers    ${stats}[messagesAcked]    ${stats}[messagesSent]
    ...    ${stats}[messagesAcked] of ${stats}[messagesSent] messages acknowledged
