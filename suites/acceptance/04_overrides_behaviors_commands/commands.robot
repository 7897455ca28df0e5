*** Settings ***
Documentation       Send Command To Device and Get Received Commands: reboot reconnects the device (and what it
...                 reads meanwhile is queued and delivered), setInterval changes its rate, every command is
...                 recorded and answered on the model's response topic, unknown commands are refused;
...                 updateFirmware reports its progress and result, reboots into the new version, and fails for
...                 a share of the devices as the model's failureRate and the fleet's seed say.
Resource            ../acceptance.resource
Library             Collections

Suite Setup         Start Acceptance Environment
Suite Teardown      Stop Acceptance Environment
Test Teardown       Delete All Fleets


*** Test Cases ***
Reboot Reconnects The Device And Is Counted
    [Documentation]    The device disconnects and connects again; the other device is not touched; the command is
    ...    recorded and answered.
    Open Receiver    reboot    iotix/acceptance-sensor/reboot-0/commands/+/response
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=2    name=reboot    id_pattern=reboot-{index}
    Send Command To Device    reboot-0    reboot
    Wait Until Keyword Succeeds    10s    100ms
    ...    Device Status Should Include    reboot-0    state=running    connects=2    reconnects=1    disconnects=1
    Device Status Should Include    reboot-1    connects=1    reconnects=0
    ${commands} =    Get Received Commands    reboot-0
    Length Should Be    ${commands}    1
    Values Should Include    command    ${commands}[0]    command=reboot    status=ok
    ...    topic=iotix/acceptance-sensor/reboot-0/commands/reboot
    Response Should Be    reboot    reboot-0    1    command=reboot    status=ok    deviceId=reboot-0
    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=2    max_loss=0%    timeout=10s
    [Teardown]    Delete Fleets And Disconnect    reboot

Readings Taken During A Reboot Are Queued And Delivered Late
    [Documentation]    A QoS 1 device that is down for 1.5 s keeps what it reads in its offline queue and sends it
    ...    when it is back: nothing is lost or dropped, and the oldest queued readings arrive over a second late.
    ${fleet} =    Start Measured Fleet    queued
    Send Command To Device    queued-0    reboot    delayMs=1500
    Wait Until Keyword Succeeds    5s    50ms    Device Should Be Queueing    queued-0    2
    ${back} =    Wait Until Device Is In State    queued-0    running
    Wait Until Fleet Has Sent    ${fleet}    ${{ ${back}[messagesSent] * 2 + 4 }}
    Device Status Should Include    queued-0    messagesQueued=0    messagesDropped=0    messagesFailed=0
    ${report} =    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=5    max_loss=0%
    ...    timeout=10s    source=queued
    Should Be True    ${report}[latencyMs][max] >= 1000
    [Teardown]    Delete Fleets And Disconnect    queued

What Does Not Fit The Offline Queue Is Dropped And Counted
    [Documentation]    With offline_queue_size=2 a device down for 1.5 s keeps two readings and drops the rest,
    ...    counted in messagesDropped; dropped readings never got a sequence number, so the receiver sees no gap.
    ${fleet} =    Start Measured Fleet    small-queue    offline_queue_size=2
    Send Command To Device    small-queue-0    reboot    delayMs=1500
    Wait Until Keyword Succeeds    5s    50ms
    ...    Device Status Should Include    small-queue-0    state=reconnecting    messagesQueued=2
    ${status} =    Wait Until Device Is In State    small-queue-0    running
    Should Be True    ${status}[messagesDropped] >= 2
    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=2    max_loss=0%    timeout=10s
    ...    source=small-queue
    [Teardown]    Delete Fleets And Disconnect    small-queue

A QoS 0 Device Drops What It Reads While Offline
    [Documentation]    Only QoS 1 and 2 readings are queued; at QoS 0 they are dropped and counted.
    Start Measured Fleet    qos0    qos=0
    Send Command To Device    qos0-0    reboot    delayMs=1000
    ${status} =    Wait Until Keyword Succeeds    5s    50ms    Device Should Have Dropped    qos0-0    2
    Should Be Equal As Integers    ${status}[messagesQueued]    0
    Wait Until Device Is In State    qos0-0    running
    [Teardown]    Delete Fleets And Disconnect    qos0

The setInterval Command Makes A Device Send Faster
    [Documentation]    From one reading every 200 ms to one every 50 ms: from about 10 to about 40 readings in
    ...    2 s. The bounds are wide: the machine may be slow.
    Open Receiver    faster    iotix/acceptance-sensor/faster-0/commands/+/response
    Start Local Fleet    acceptance-sensor    name=faster    id_pattern=faster-{index}
    ${normal} =    Readings In    faster-0    2s
    Should Be True    5 <= ${normal} <= 14    ${normal} readings in 2 s at 200 ms
    Send Command To Device    faster-0    setInterval    intervalMs=50
    Response Should Be    faster    faster-0    1    command=setInterval    status=ok    detail=interval set to 50 ms
    ${fast} =    Readings In    faster-0    2s
    Should Be True    ${fast} >= 25    ${fast} readings in 2 s at 50 ms
    [Teardown]    Delete Fleets And Disconnect    faster

The setInterval Command Makes A Device Send Slower
    [Documentation]    From one reading every 200 ms to one a second: at most 4 readings in 3 s.
    Start Local Fleet    acceptance-sensor    name=slower    id_pattern=slower-{index}
    Send Command To Device    slower-0    setInterval    intervalMs=1000
    Wait Until Keyword Succeeds    5s    100ms    Device Should Have Received Commands    slower-0    1
    ${slow} =    Readings In    slower-0    3s
    Should Be True    ${slow} <= 4    ${slow} readings in 3 s at 1000 ms

A Command That Cannot Be Applied Is Answered With An Error
    [Documentation]    setInterval below 10 ms is recorded with status 'error' and answered with the reason.
    Open Receiver    too-fast    iotix/acceptance-sensor/too-fast-0/commands/+/response
    Start Local Fleet    acceptance-sensor    name=too-fast    id_pattern=too-fast-{index}
    Send Command To Device    too-fast-0    setInterval    intervalMs=5
    Response Should Be    too-fast    too-fast-0    1    command=setInterval    status=error
    ...    detail=intervalMs must be >= 10, got 5
    ${commands} =    Get Received Commands    too-fast-0
    Values Should Include    command    ${commands}[0]    status=error    parameters.intervalMs=5
    [Teardown]    Delete Fleets And Disconnect    too-fast

Every Command Is Recorded With Its Parameters
    [Documentation]    A command the device does not act on (ping) is recorded, oldest first, and answered 'ok';
    ...    parameters are JSON values (numbers, true/false, lists and objects in their JSON form).
    Start Local Fleet    acceptance-sensor    name=record    id_pattern=record-{index}
    ${commands} =    Get Received Commands    record-0
    Should Be Empty    ${commands}
    Send Command To Device    record-0    ping    note=hello    count=3    urgent=true    tags=["a", "b"]
    Send Command To Device    record-0    ping
    ${commands} =    Wait Until Keyword Succeeds    5s    100ms
    ...    Device Should Have Received Commands    record-0    2
    Should Be Equal    ${commands}[0][parameters]
    ...    ${{ {'note': 'hello', 'count': 3, 'urgent': True, 'tags': ['a', 'b']} }}
    Should Be Equal    ${commands}[1][parameters]    ${{ {} }}
    Values Should Include    command    ${commands}[0]    command=ping    status=ok
    Fleet Stats Should Include    record    commandsReceived=2

A Firmware Update Reports Progress And Result And Reboots Into The New Version
    [Documentation]    updateFirmware: the gateway answers 'accepted', reports its download (0 to 100 %) and the
    ...    result on the response topic, reboots, and from then on runs 1.1.0: in Get Device Status and in its
    ...    telemetry.
    Open Receiver    firmware    iotix/acceptance-gateway/fw-0/#
    Start Local Fleet    acceptance-gateway    name=firmware    id_pattern=fw-{index}    seed=1
    Device Status Should Include    fw-0    firmwareVersion=1.0.0
    Send Command To Device    fw-0    updateFirmware    version=1.1.0    url=https://fw.example/gw.bin
    ${result} =    Firmware Responses Should Show Progress And Result    fw-0    ok
    Values Should Include    result    ${result}    version=1.1.0    previousVersion=1.0.0
    ...    detail=firmware 1.1.0 installed (was 1.0.0); rebooting
    Wait Until Keyword Succeeds    10s    100ms
    ...    Device Status Should Include    fw-0    state=running    reconnects=1    firmwareVersion=1.1.0
    ${commands} =    Get Received Commands    fw-0
    Values Should Include    command    ${commands}[0]    command=updateFirmware    status=ok
    Wait Until Keyword Succeeds    10s    100ms    Latest Reading Should Carry Firmware    fw-0    1.1.0
    [Teardown]    Delete Fleets And Disconnect    firmware

A Share Of Firmware Updates Fails, The Same Devices Again With The Same Seed
    [Documentation]    The model's failureRate 0.5: of six gateways some fail (status error, still 1.0.0, no
    ...    reboot) and the others run 1.1.0. A fleet created again with the same seed fails on the same devices.
    ${failed} =    Update Every Gateway    share    seed=1
    ${count} =    Get Length    ${failed}
    Should Be True    0 < ${count} < 6    ${count} of 6 updates failed
    FOR    ${device}    IN    @{failed}
        Device Status Should Include    ${device}    firmwareVersion=1.0.0    reconnects=0
    END
    Delete All Fleets
    ${again} =    Update Every Gateway    share    seed=1
    Should Be Equal    ${again}    ${failed}

Unknown Commands And Devices Are Refused
    [Documentation]    The failure names the device, its model and the commands it has.
    Create Local Fleet    acceptance-sensor    name=refuse    id_pattern=refuse-{index}
    Create Local Fleet    simple-temperature-plus    name=plain    id_pattern=plain-{index}
    Run Keyword And Expect Error
    ...    Device 'refuse-0' (model 'acceptance-sensor') has no command 'selfDestruct'; its commands: reboot, *
    ...    Send Command To Device    refuse-0    selfDestruct
    Run Keyword And Expect Error
    ...    Device 'plain-0' (model 'simple-temperature-plus') has no command 'reboot'; its commands: none.
    ...    Send Command To Device    plain-0    reboot
    Run Keyword And Expect Error    No device 'ghost-0' in any fleet (fleets: plain, refuse).
    ...    Send Command To Device    ghost-0    reboot
    Run Keyword And Expect Error    No device 'ghost-0' in any fleet*    Get Received Commands    ghost-0


*** Keywords ***
Firmware Responses Should Show Progress And Result
    [Documentation]    Waits until receiver 'firmware' got the seven responses of ${device_id}'s updateFirmware:
    ...    accepted, downloading at 0, 25, 50, 75 and 100 %, and the result ${status}; returns the result.
    [Arguments]    ${device_id}    ${status}
    ${messages} =    Wait Until Messages Received
    ...    iotix/acceptance-gateway/${device_id}/commands/updateFirmware/response    count=7    timeout=10s
    ...    alias=firmware
    ${responses} =    Evaluate    [json.loads(m['payload']) for m in $messages]    modules=json
    ${statuses} =    Evaluate    [r['status'] for r in $responses]
    Should Be Equal    ${statuses}    ${{ ['accepted'] + ['downloading'] * 5 + [$status] }}
    Should Be Equal    ${{ [r.get('progress') for r in $responses[1:6]] }}    ${{ [0, 25, 50, 75, 100] }}
    RETURN    ${responses}[-1]

Latest Reading Should Carry Firmware
    [Documentation]    Fails unless the latest telemetry of ${device_id} at receiver 'firmware' says it runs
    ...    firmware ${version}.
    [Arguments]    ${device_id}    ${version}
    ${readings} =    Get Received Messages    iotix/acceptance-gateway/${device_id}/telemetry    alias=firmware
    ${latest} =    Evaluate    json.loads($readings[-1]['payload'])    modules=json
    Should Be Equal    ${latest}[firmwareVersion]    ${version}

Update Every Gateway
    [Documentation]    Starts fleet ${name} of six acceptance gateways with ${seed}, sends each updateFirmware
    ...    to 1.1.0, waits until every update is done; returns the ids of the devices whose update failed.
    [Arguments]    ${name}    ${seed}
    ${fleet} =    Start Local Fleet    acceptance-gateway    count=6    name=${name}    id_pattern=${name}-{index}
    ...    seed=${seed}
    ${devices} =    Get Devices    ${fleet}
    FOR    ${device}    IN    @{devices}
        Send Command To Device    ${device}    updateFirmware    version=1.1.0
    END
    VAR    @{failed}    @{EMPTY}
    FOR    ${device}    IN    @{devices}
        ${command} =    Wait Until Keyword Succeeds    10s    100ms    Update Should Be Done    ${device}
        IF    $command['status'] == 'error'    Append To List    ${failed}    ${device}
        IF    $command['status'] == 'ok'
            Wait Until Keyword Succeeds    10s    100ms
            ...    Device Status Should Include    ${device}    state=running    firmwareVersion=1.1.0
        END
    END
    RETURN    ${failed}

Update Should Be Done
    [Documentation]    Fails while the latest command of ${device_id} is still 'accepted'; returns it.
    [Arguments]    ${device_id}
    ${commands} =    Get Received Commands    ${device_id}
    Should Not Be Equal    ${commands}[-1][status]    accepted    ${device_id} is still updating    values=False
    RETURN    ${commands}[-1]

Start Measured Fleet
    [Documentation]    Opens receiver ${name} on the acceptance sensors' telemetry, starts fleet ${name} of two
    ...    acceptance sensors (ids ${name}-{index}) with ${options} and waits until they sent a few readings.
    [Arguments]    ${name}    &{options}
    Open Receiver    ${name}    iotix/acceptance-sensor/+/telemetry
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=2    name=${name}    id_pattern=${name}-{index}
    ...    &{options}
    Wait Until Fleet Has Sent    ${fleet}    6
    RETURN    ${fleet}

Device Should Be Queueing
    [Documentation]    Fails unless ${device_id} is offline with at least ${count} readings in its queue.
    [Arguments]    ${device_id}    ${count}
    ${status} =    Device Status Should Include    ${device_id}    state=reconnecting
    Should Be True    ${status}[messagesQueued] >= ${count}
    ...    ${device_id} has ${status}[messagesQueued] readings queued, expected at least ${count}

Device Should Have Dropped
    [Documentation]    Fails unless ${device_id} dropped at least ${count} readings; returns its status.
    [Arguments]    ${device_id}    ${count}
    ${status} =    Get Device Status    ${device_id}
    Should Be True    ${status}[messagesDropped] >= ${count}
    ...    ${device_id} dropped ${status}[messagesDropped] readings, expected at least ${count}
    RETURN    ${status}

Device Should Have Received Commands
    [Documentation]    Fails unless ${device_id} recorded ${count} commands; returns them.
    [Arguments]    ${device_id}    ${count}
    ${commands} =    Get Received Commands    ${device_id}
    Length Should Be    ${commands}    ${count}
    RETURN    ${commands}

Response Should Be
    [Documentation]    Waits until receiver ${alias} (subscribed to the response topics of ${device_id}) got
    ...    ${number} command responses and checks the fields of response number ${number}.
    [Arguments]    ${alias}    ${device_id}    ${number}    &{expected}
    ${messages} =    Wait Until Messages Received    iotix/acceptance-sensor/${device_id}/commands/+/response
    ...    count=${number}    alias=${alias}    timeout=5s
    ${response} =    Evaluate    json.loads($messages[${number} - 1]['payload'])    modules=json
    Values Should Include    response    ${response}    &{expected}
