*** Settings ***
Documentation       Telemetry Should Be Received From Fleet: what each device sent is compared, by deviceId and
...                 seq, with what a receiver got; it passes, and it fails naming the fleet, the totals and the
...                 worst devices, also for duplicates (max_duplicates) and reordering (in_order). One test counts
...                 what a fleet sent with mosquitto_sub, independently of IoTix.
Resource            ../acceptance.resource
Library             Process
Library             String

Suite Setup         Start Acceptance Environment
Suite Teardown      Stop Acceptance Environment
Test Teardown       Delete All Fleets


*** Test Cases ***
Every Reading Of A Fleet Arrives
    [Documentation]    The report of a passing check: everything expected arrived, no gaps, no duplicates.
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=5    name=complete    id_pattern=complete-{index}
    Wait Until Fleet Has Sent    ${fleet}    15
    ${report} =    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=3    max_loss=0%
    ...    timeout=10s
    Should Be Equal As Integers    ${report}[devices]    5
    Should Be True    ${report}[received] >= 15
    Should Be Equal As Integers    ${report}[received]    ${report}[expected]
    Should Be Equal As Integers    ${report}[lost]    0
    Should Be Equal As Integers    ${report}[duplicates]    0
    Should Be Equal As Integers    ${report}[silentDevices]    0
    Should Be Empty    ${report}[worstDevices]

A Receiver That Joins Late Judges From The First Message It Got
    [Documentation]    Devices that started before the receiver subscribed are checked from the first sequence
    ...    number that reached it, so what was sent before it listened is not counted as lost.
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=3    name=late    id_pattern=late-{index}
    Wait Until Fleet Has Sent    ${fleet}    9
    Open Receiver    late-receiver    iotix/acceptance-sensor/+/telemetry
    ${report} =    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=2    max_loss=0%
    ...    timeout=10s    source=late-receiver
    Should Be Equal As Integers    ${report}[lost]    0
    [Teardown]    Delete Fleets And Disconnect    late-receiver

Devices The Receiver Does Not Hear Fail The Check
    [Documentation]    A receiver subscribed to one device's topic only: the other two devices are silent,
    ...    everything they sent counts as lost, and the message names fleet, totals and worst devices.
    Open Receiver    partial    iotix/acceptance-sensor/partial-0/telemetry
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=3    name=partial    id_pattern=partial-{index}
    Wait Until Fleet Has Sent    ${fleet}    9
    ${error} =    Run Keyword And Expect Error    Fleet 'partial' lost * of * messages (*%), more than the allowed 0 %*
    ...    Telemetry Should Be Received From Fleet    ${fleet}    max_loss=0%    timeout=2s    source=partial
    Should Match Regexp    ${error}    worst device partial-[12] lost \\d+ \\(first missing seq 0, 1, 2
    Should Match Regexp    ${error}    2 of 3 devices delivered fewer than 1 message: partial-[12] \\(0\\)
    Should End With    ${error}    (2 devices silent) [receiver 'partial'].
    [Teardown]    Delete Fleets And Disconnect    partial

A Loss Within max_loss Passes
    [Documentation]    With two of three devices unheard about two thirds are lost: 80 % allowed passes, 50 % fails.
    Open Receiver    third    iotix/acceptance-sensor/third-0/telemetry
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=3    name=third    id_pattern=third-{index}
    Wait Until Fleet Has Sent    ${fleet}    9
    ${report} =    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=0    max_loss=80%
    ...    timeout=1s    source=third
    Should Be True    55 < ${report}[lossPercent] < 75
    Run Keyword And Expect Error    Fleet 'third' lost *, more than the allowed 50 %*
    ...    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=0    max_loss=50%
    ...    timeout=1s    source=third
    [Teardown]    Delete Fleets And Disconnect    third

More Messages Than A Device Can Send In Time Fail The Check
    [Documentation]    min_messages=1000 within 2 s cannot be met at 5 messages a second: the failure names
    ...    how many devices fell short and how many messages each delivered.
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=3    name=few    id_pattern=few-{index}
    ${error} =    Run Keyword And Expect Error
    ...    Fleet 'few': 3 of 3 devices delivered fewer than 1000 messages: few-0 (*), few-1 (*), few-2 (*)*
    ...    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=1000    timeout=2s
    Should End With    ${error}    [receiver 'default'].

A Fleet That Sent Nothing Fails The Check
    [Documentation]    A fleet that was created but not started has nothing to compare.
    ${fleet} =    Create Local Fleet    acceptance-sensor    count=2    name=mute
    Run Keyword And Expect Error
    ...    Fleet 'mute' sent nothing that 'default' could expect: no device has sent a message yet*
    ...    Telemetry Should Be Received From Fleet    ${fleet}    timeout=1s

A Duplicate Fails The Check Unless max_duplicates Allows It
    [Documentation]    A message that arrives twice (here: one of the device's own envelopes published again)
    ...    fails the check by default, naming the count and the device; max_duplicates=1 lets it pass.
    Open Receiver    dup    iotix/acceptance-sensor/+/telemetry
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=2    name=dup    id_pattern=dup-{index}
    Wait Until Fleet Has Sent    ${fleet}    6
    Publish First Envelope Again    dup-1    alias=dup
    Wait Until Messages Received    iotix/acceptance-sensor/+/telemetry    count=7    alias=dup
    ${error} =    Run Keyword And Expect Error    Fleet 'dup': 1 duplicate message arrived*
    ...    Telemetry Should Be Received From Fleet    ${fleet}    max_loss=0%    timeout=10s    source=dup
    ${expected} =    Catenate    Fleet 'dup': 1 duplicate message arrived, more than the allowed 0
    ...    (max_duplicates); most on dup-1 (1) [receiver 'dup'].
    Should Be Equal    ${error}    ${expected}
    ${report} =    Telemetry Should Be Received From Fleet    ${fleet}    max_loss=0%    timeout=10s    source=dup
    ...    max_duplicates=1
    Should Be Equal As Integers    ${report}[duplicates]    1
    [Teardown]    Delete Fleets And Disconnect    dup

A Message Overtaken By A Later One Fails Only With in_order
    [Documentation]    An envelope of device order-0 with a sequence number far ahead arrives first: every
    ...    message the device sends after it is out of order. The check passes by default and fails with
    ...    in_order=True, naming the count and the device.
    Open Receiver    order    iotix/acceptance-sensor/+/telemetry
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=1    name=order    id_pattern=order-{index}
    ${sent} =    Publish Envelope Far Ahead    order-0
    Wait Until Fleet Has Sent    ${fleet}    ${{ ${sent} + 3 }}
    ${report} =    Telemetry Should Be Received From Fleet    ${fleet}    max_loss=0%    timeout=10s    source=order
    Should Be True    ${report}[outOfOrder] >= 2 and ${report}[duplicates] == 0
    ${error} =    Run Keyword And Expect Error    Fleet 'order': * messages arrived after a later one of the same*
    ...    Telemetry Should Be Received From Fleet    ${fleet}    max_loss=0%    timeout=10s    source=order
    ...    in_order=True
    Should Match Regexp    ${error}
    ...    none allowed \\(in_order=True\\); most on order-0 \\(\\d+\\) \\[receiver 'order'\\]\\.$
    [Teardown]    Delete Fleets And Disconnect    order

Wrong Arguments Of The Check Are Refused
    [Documentation]    max_loss must be a percentage, source a connected receiver, fleet a fleet that exists.
    ${fleet} =    Create Local Fleet    acceptance-sensor    name=args
    Run Keyword And Expect Error    max_loss must be a percentage like 0.1% or 0, got 'some'.
    ...    Telemetry Should Be Received From Fleet    ${fleet}    max_loss=some
    Run Keyword And Expect Error    max_loss must be between 0% and 100%, got 150%.
    ...    Telemetry Should Be Received From Fleet    ${fleet}    max_loss=150%
    Run Keyword And Expect Error    max_duplicates must be 0 or more, got -1.
    ...    Telemetry Should Be Received From Fleet    ${fleet}    max_duplicates=-1
    Run Keyword And Expect Error
    ...    No receiver named 'backend' (available: 'default'); connect and subscribe an MQTT receiver, start*
    ...    Telemetry Should Be Received From Fleet    ${fleet}    source=backend
    Run Keyword And Expect Error    No fleet named 'nope' (fleets: args).
    ...    Telemetry Should Be Received From Fleet    nope

An Independent Subscriber Receives Exactly What The Fleet Sent
    [Documentation]    mosquitto_sub (not IoTix) subscribes before the fleet starts; after the fleet stops it
    ...    must have printed exactly messagesSent telemetry messages of the fleet.
    ${sub} =    Start Independent Subscriber    iotix/acceptance-sensor/+/telemetry    ${WORKDIR}/independent.txt
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=5    name=independent
    ...    id_pattern=independent-{index}
    Wait Until Fleet Has Sent    ${fleet}    30
    Stop Fleet    ${fleet}
    ${stats} =    Get Fleet Stats    ${fleet}
    Wait Until Keyword Succeeds    10s    200ms
    ...    Independent Subscriber Should Have Printed    ${WORKDIR}/independent.txt    "deviceId":"independent-
    ...    ${stats}[messagesSent]
    ${last} =    Count Independent Messages    ${WORKDIR}/independent.txt    "deviceId":"independent-4"
    Should Be True    ${last} > 0
    [Teardown]    Run Keywords    Terminate Process    ${sub}    AND    Delete All Fleets


*** Keywords ***
Publish First Envelope Again
    [Documentation]    Publishes the first telemetry message of ${device_id} that connection ${alias} received
    ...    once more, to the same topic.
    [Arguments]    ${device_id}    ${alias}
    ${first} =    Wait Until Messages Received    iotix/acceptance-sensor/${device_id}/telemetry    alias=${alias}
    Publish MQTT Message    ${first}[0][topic]    ${first}[0][payload]    qos=1

Publish Envelope Far Ahead
    [Documentation]    Publishes an envelope of ${device_id} whose seq is 100,000 ahead of the device's next one
    ...    to the device's telemetry topic; returns how many messages the device had sent.
    [Arguments]    ${device_id}
    ${status} =    Get Device Status    ${device_id}
    ${ahead} =    Evaluate    json.dumps({'deviceId': $device_id, 'seq': $status['nextSeq'] + 100000, 'ts': 0})
    ...    modules=json
    Publish MQTT Message    iotix/acceptance-sensor/${device_id}/telemetry    ${ahead}    qos=1
    RETURN    ${status}[nextSeq]

Start Independent Subscriber
    [Documentation]    Starts mosquitto_sub on ${topic} (QoS 1) with its output line-buffered into ${output} and
    ...    waits until the broker acknowledged its subscription. Returns the process handle.
    [Arguments]    ${topic}    ${output}
    ${process} =    Start Process    stdbuf    -oL    mosquitto_sub    -h    ${BROKER}[host]    -p    ${BROKER}[port]
    ...    -t    ${topic}    -q    1    -d    -W    120    stdout=${output}    stderr=STDOUT
    Wait Until Keyword Succeeds    10s    100ms
    ...    Independent Subscriber Should Have Printed    ${output}    SUBACK    1
    RETURN    ${process}

Independent Subscriber Should Have Printed
    [Documentation]    Fails unless the independent subscriber printed exactly ${count} lines containing ${text}
    ...    into ${output}.
    [Arguments]    ${output}    ${text}    ${count}
    ${found} =    Count Independent Messages    ${output}    ${text}
    Should Be Equal As Integers    ${found}    ${count}
    ...    mosquitto_sub printed ${found} lines with '${text}', expected ${count}    values=False

Count Independent Messages
    [Documentation]    How many lines of the independent subscriber's output ${output} contain ${text}.
    [Arguments]    ${output}    ${text}
    ${content} =    Get File    ${output}
    ${lines} =    Get Lines Containing String    ${content}    ${text}
    ${count} =    Get Line Count    ${lines}
    RETURN    ${count}
