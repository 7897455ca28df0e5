*** Settings ***
Documentation       The chaos scenarios of the iotix README with real network faults between the devices and the
...                 broker: a partition of 30 % of a fleet and its recovery, a cascading failure that starts slow
...                 and accelerates, random failures (five minutes in the README, 30 seconds here), and a fleet on
...                 a 3g link with its latency asserted. The devices are cellular asset trackers (QoS 1, keep-alive
...                 6 s, a last will).
Resource            ../../resources/iotix.resource

Suite Setup         Start Local Test Environment
Test Teardown       Delete All Fleets


*** Variables ***
${WILLS}        iotix/cellular-asset-tracker/+/status


*** Test Cases ***
A Network Partition Of 30 Percent And Its Recovery
    [Documentation]    30 % of 20 trackers lose their network: the broker publishes exactly their last wills
    ...    (keep-alive 6 s), the others keep reporting; after healing every tracker reconnects and every QoS 1
    ...    reading of the partition arrives.
    Connect To MQTT Broker    ${BROKER}[host]    ${BROKER}[port]    alias=wills
    Subscribe To Topic    ${WILLS}    qos=1    alias=wills
    ${fleet} =    Start Trackers    pallets    20
    ${cut} =    Partition Devices    ${fleet}    percentage=30    seed=11
    Wait Until Messages Received    ${WILLS}    count=6    timeout=20s    alias=wills
    ${wills} =    Get Received Messages    ${WILLS}    alias=wills
    ${offline} =    Evaluate    sorted(json.loads(m['payload'])['deviceId'] for m in $wills)    modules=json
    Should Be Equal    ${offline}    ${{ sorted($cut) }}
    Heal Partition    ${fleet}
    Fleet Should Recover Without Loss    ${fleet}
    [Teardown]    Run Keywords    Delete All Fleets    AND    Disconnect From MQTT Broker    wills

A Cascading Network Failure That Starts Slow And Accelerates
    [Documentation]    Trackers fall off the network one, then two, then four, then eight at a time, each wave
    ...    sooner than the one before (4 s, 2 s, 1 s, 1 s); then the network comes back and the whole fleet
    ...    recovers with nothing lost.
    ${fleet} =    Start Trackers    cascade    30
    VAR    ${gap}    4
    FOR    ${wave}    IN RANGE    4
        Partition Devices    ${fleet}    count=${{ 2 ** ${wave} }}    seed=${wave}
        Sleep    ${gap}s
        ${gap} =    Evaluate    max(${gap} / 2, 1)
    END
    ${faults} =    Get Network Faults    ${fleet}
    Length Should Be    ${faults}    4
    Heal Partition    ${fleet}
    Fleet Should Recover Without Loss    ${fleet}

Random Network Failures Over Thirty Seconds
    [Documentation]    For 30 s (five minutes in the README's scenario) random trackers meet random faults (latency
    ...    spikes, resets, short blackholes), each for two seconds, drawn from a seeded generator so the run can
    ...    be repeated. Afterwards every tracker runs and every QoS 1 reading arrived.
    ${fleet} =    Start Trackers    random    20
    ${rng} =    Evaluate    random.Random(42)    modules=random
    FOR    ${_}    IN RANGE    15
        Random Fault    ${fleet}    ${rng}    20
        Sleep    2s
    END
    Fleet Should Recover Without Loss    ${fleet}

A Fleet On A 3g Link Meets Its Latency Budget
    [Documentation]    Ten trackers on a 3g link (latency, jitter and bandwidth of the published 3g figures):
    ...    the median end-to-end latency is above the link's one-way latency and the 99th percentile stays
    ...    within the 1.5 s budget of the tracking backend.
    ${fleet} =    Create Local Fleet    cellular-asset-tracker    count=10    name=on-3g    id_pattern=on-3g-{index:02d}
    ...    seed=4
    Apply Network Profile    ${fleet}    3g
    Start Fleet    ${fleet}
    Wait Until Fleet Is Running    ${fleet}    timeout=30s
    Sleep    5s    reason=let the trackers report over the slow link
    ${p50} =    Latency Should Be Below    ${fleet}    1.5s    percentile=50
    Latency Should Be Below    ${fleet}    1.5s    percentile=99
    ${faults} =    Get Network Faults    ${fleet}
    ${link} =    Evaluate    next(f for f in $faults if f['kind'] == 'latency')
    Should Be True    ${p50} >= ${link}[settings][latency] * 900
    ...    median ${p50} ms on a link of ${link}[summary] one way


*** Keywords ***
Start Trackers
    [Documentation]    Creates ${count} cellular asset trackers named ${name}-00, ${name}-01, ..., starts them and
    ...    waits until they all run. Returns the fleet name.
    [Arguments]    ${name}    ${count}
    ${fleet} =    Create Local Fleet    cellular-asset-tracker    count=${count}    name=${name}
    ...    id_pattern=${name}-{index:02d}    seed=1
    Start Fleet    ${fleet}
    Wait Until Fleet Is Running    ${fleet}
    RETURN    ${fleet}

Random Fault
    [Documentation]    Gives one device of ${fleet} (of ${count}, chosen by ${rng}) a random fault for 2 s: a latency
    ...    spike of 100-800 ms, a reset, or a blackhole.
    [Arguments]    ${fleet}    ${rng}    ${count}
    ${kind} =    Evaluate    $rng.choice(['latency', 'reset', 'blackhole'])
    ${device} =    Evaluate    '${fleet}-%02d' % $rng.randrange(${count})
    ${settings} =    Evaluate    {'latency': {'latency': '%dms' % $rng.randint(100, 800)}}.get($kind, {})
    Add Network Fault    ${fleet}    ${kind}    devices=${{ [$device] }}    duration=2s    &{settings}

Fleet Should Recover Without Loss
    [Documentation]    Waits until every device of ${fleet} runs again, then checks that none of its readings
    ...    was dropped and every one arrived at the suite's receiver. QoS 1 is at least once: a reading that
    ...    was in flight when a device gave its connection up is sent again (DUP) on the new one and may arrive
    ...    twice, so duplicates are allowed up to what the fleet sent again.
    [Arguments]    ${fleet}
    Wait Until Fleet Is Running    ${fleet}    timeout=40s
    ${stats} =    Get Fleet Stats    ${fleet}
    Should Be Equal As Integers    ${stats}[messagesDropped]    0
    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=5    max_loss=0%    timeout=40s
    ...    max_duplicates=${stats}[transport][redelivered]
