*** Settings ***
Documentation       Create Fleet, Get Fleets, Get Fleet Stats, Get Devices, Get Device Status and Delete Fleet:
...                 names, device id patterns, the counters a fleet reports and the errors for names and ids
...                 that are taken or unknown.
Resource            ../acceptance.resource
Library             Collections

Suite Setup         Start Acceptance Environment
Suite Teardown      Stop Acceptance Environment
Test Teardown       Delete All Fleets


*** Variables ***
@{FLEET STATS KEYS}     deviceCount    runningDeviceCount    launchedDeviceCount    messagesSent    messagesAcked
...                     messagesFailed    messagesDropped    messagesQueued    bytesSent    connects    disconnects
...                     reconnects    connectFailures    commandsReceived    behaviorsFired    states    sendLatenessMs
...                     fleet    model    protocol    target    state
@{DEVICE STATUS KEYS}   deviceId    fleet    index    state    messagesSent    messagesAcked    messagesFailed
...                     messagesDropped    messagesQueued    bytesSent    connects    disconnects    reconnects
...                     connectFailures    nextSeq    lastError    commandsReceived


*** Test Cases ***
Create Fleet Returns Its Name And Creates The Devices
    [Documentation]    Nothing connects yet: every device is 'created' and the counters are zero.
    ${fleet} =    Create Local Fleet    simple-temperature-plus    count=3    name=basic
    Should Be Equal    ${fleet}    basic
    ${devices} =    Get Devices    ${fleet}
    Should Be Equal    ${devices}    ${{ ['basic-0', 'basic-1', 'basic-2'] }}
    Fleet Stats Should Include    ${fleet}    state=created    model=simple-temperature-plus
    ...    target=mqtt://${BROKER}[host]:${BROKER}[port]    deviceCount=3    states.created=3
    ...    runningDeviceCount=0    messagesSent=0

The Fleet Name Defaults To The Model Id
    [Documentation]    Without name=, the fleet is named after its model; -2, -3, ... when that name is taken.
    ...    The default id pattern is <fleet name>-{index}.
    ${first} =    Create Local Fleet    thermostat
    ${second} =    Create Local Fleet    thermostat
    Should Be Equal    ${first}    thermostat
    Should Be Equal    ${second}    thermostat-2
    ${devices} =    Get Devices    ${second}
    Should Be Equal    ${devices}    ${{ ['thermostat-2-0'] }}

Id Patterns Format The Index, Fleet And Model
    [Documentation]    {index} is 0-based, {n} 1-based, format specs work, {fleet} and {model} are names.
    Device Ids Should Be    env    env-{index:05d}    env-00000    env-00001    env-00002
    Device Ids Should Be    rooms    room-{n}    room-1    room-2    room-3
    Device Ids Should Be    hall    {fleet}.{index}    hall.0    hall.1    hall.2
    Device Ids Should Be    hex    {model}-{index:02x}    simple-temperature-plus-00    simple-temperature-plus-01

An Unusable Id Pattern Is Refused
    [Documentation]    An unknown placeholder names the pattern and the placeholders there are; a pattern
    ...    without {index} or {n} gives every device the same id.
    Run Keyword And Expect Error
    ...    id pattern 'dev-{serial}' is not usable ('serial'); use placeholders {index}, {index:05d}, {n}*
    ...    Create Local Fleet    simple-temperature-plus    count=2    name=bad-pattern    id_pattern=dev-{serial}
    Run Keyword And Expect Error    Fleet 'same-id': device ids must be unique; repeated: sensor
    ...    Create Local Fleet    simple-temperature-plus    count=2    name=same-id    id_pattern=sensor
    ${fleets} =    Get Fleets
    Should Be Empty    ${fleets}

A Duplicate Fleet Name Is Refused
    [Documentation]    The message names the fleet and what it already is.
    Create Local Fleet    simple-temperature-plus    count=2    name=taken
    Run Keyword And Expect Error
    ...    A fleet named 'taken' already exists (2 devices of model 'simple-temperature-plus'); choose another name*
    ...    Create Local Fleet    thermostat    name=taken

A Device Id Used By Another Fleet Is Refused
    [Documentation]    Device ids are unique in the process; the message names the id and the fleet that has it.
    Create Local Fleet    simple-temperature-plus    count=3    name=owner    id_pattern=shared-{index}
    Run Keyword And Expect Error
    ...    Fleet 'intruder': device id 'shared-1' is already used by fleet 'owner' (and 1 more); use another id_pattern.
    ...    Create Local Fleet    simple-temperature-plus    count=5    name=intruder    id_pattern=shared-{n}
    ...    seed=1    qos=0    offline_queue_size=10
    Run Keyword And Expect Error    No fleet named 'intruder'*    Get Fleet Stats    intruder

A Negative Count And An Unknown QoS Are Refused
    [Documentation]    Arguments that cannot work fail before anything is created.
    Run Keyword And Expect Error    Create Fleet 'negative': count must be at least 1, got -1.
    ...    Create Local Fleet    simple-temperature-plus    count=-1    name=negative
    Run Keyword And Expect Error    Create Fleet 'qos3': qos must be 0, 1 or 2, got 3.
    ...    Create Local Fleet    simple-temperature-plus    name=qos3    qos=3
    ${fleets} =    Get Fleets
    Should Be Empty    ${fleets}

Bad Ports And A Count Of 0 Are Refused While Another Fleet Keeps Running
    [Documentation]    A port outside 1-65535 is refused naming it (the resolver would dial 108807 as 43271 and
    ...    70000 as 4464), and so is a count of 0 (a fleet of no devices would pass while testing nothing). The
    ...    fleet that runs keeps running and sending, and none of the refused fleets exists.
    ${steady} =    Start Local Fleet    acceptance-sensor    count=2    name=steady    id_pattern=steady-{index}
    ${before} =    Get Fleet Stats    ${steady}
    FOR    ${port}    IN    108807    70000    0    -1
        Run Keyword And Expect Error
        ...    Create Fleet 'port-${port}': port must be a port number between 1 and 65535, got ${port}.
        ...    Create Fleet    acceptance-sensor    name=port-${port}    host=${BROKER}[host]    port=${port}
    END
    Run Keyword And Expect Error
    ...    Create Fleet 'empty': count must be at least 1, got 0: a fleet of no devices would start, run and pass*
    ...    Create Local Fleet    acceptance-sensor    count=0    name=empty
    Run Keyword And Expect Error
    ...    Create Fleet of model 'acceptance-sensor': count must be at least 1, got 0: *
    ...    Create Local Fleet    acceptance-sensor    count=0
    ${fleets} =    Get Fleets
    Should Be Equal    ${fleets}    ${{ ['steady'] }}
    Wait Until Fleet Has Sent    ${steady}    ${{ ${before}[messagesSent] + 4 }}
    Fleet Stats Should Include    ${steady}    state=running    runningDeviceCount=2    messagesFailed=0

Get Fleets Lists The Fleets Of The Process
    [Documentation]    Names in creation order; a deleted fleet is gone from the list.
    Create Local Fleet    simple-temperature-plus    name=list-a
    Create Local Fleet    simple-temperature-plus    name=list-b
    ${fleets} =    Get Fleets
    Should Be Equal    ${fleets}    ${{ ['list-a', 'list-b'] }}
    Delete Fleet    list-a
    ${fleets} =    Get Fleets
    Should Be Equal    ${fleets}    ${{ ['list-b'] }}

Get Fleet Stats Has Every Counter
    [Documentation]    The dictionary has the counters the issue asks for, and more.
    ${fleet} =    Create Local Fleet    simple-temperature-plus    count=2    name=stats
    ${stats} =    Get Fleet Stats    ${fleet}
    FOR    ${key}    IN    @{FLEET STATS KEYS}
        Dictionary Should Contain Key    ${stats}    ${key}
    END
    Dictionary Should Contain Key    ${stats}[sendLatenessMs]    p99
    Run Keyword And Expect Error    No fleet named 'no-such-fleet' (fleets: stats).    Get Fleet Stats    no-such-fleet

Get Device Status Describes One Device
    [Documentation]    State, counters and last error of one device, found by its id in any fleet.
    Create Local Fleet    simple-temperature-plus    count=2    name=status    id_pattern=status-{index}
    ${status} =    Device Status Should Include    status-1    deviceId=status-1    fleet=status    index=1
    ...    state=created    lastError=None    nextSeq=0
    FOR    ${key}    IN    @{DEVICE STATUS KEYS}
        Dictionary Should Contain Key    ${status}    ${key}
    END
    Run Keyword And Expect Error    No device 'status-9' in any fleet (fleets: status).
    ...    Get Device Status    status-9

Get Devices Filters By State
    [Documentation]    Without state= every id; with a state only the devices in it.
    ${fleet} =    Create Local Fleet    simple-temperature-plus    count=3    name=states    id_pattern=states-{index}
    ${created} =    Get Devices    ${fleet}    state=created
    Should Be Equal    ${created}    ${{ ['states-0', 'states-1', 'states-2'] }}
    ${running} =    Get Devices    ${fleet}    state=running
    Should Be Empty    ${running}
    Start Fleet    ${fleet}
    Wait Until Fleet Is Running    ${fleet}
    ${running} =    Get Devices    ${fleet}    state=running
    Should Be Equal    ${running}    ${created}
    Unknown State Should Be Refused    ${fleet}

Delete Fleet Frees Its Name And Device Ids
    [Documentation]    A deleted fleet is stopped and forgotten; its name and ids can be used again.
    ${fleet} =    Create Local Fleet    simple-temperature-plus    count=2    name=reuse    id_pattern=reuse-{index}
    Start Fleet    ${fleet}
    Wait Until Fleet Is Running    ${fleet}
    Delete Fleet    ${fleet}
    Run Keyword And Expect Error    No fleet named 'reuse'*    Get Fleet Stats    ${fleet}
    Run Keyword And Expect Error    No device 'reuse-0' in any fleet*    Get Device Status    reuse-0
    ${again} =    Create Local Fleet    simple-temperature-plus    count=2    name=reuse    id_pattern=reuse-{index}
    ${stats} =    Get Fleet Stats    ${again}
    Should Be Equal    ${stats}[state]    created
    Run Keyword And Expect Error    No fleet named 'gone' (fleets: reuse).    Delete Fleet    gone


*** Keywords ***
Device Ids Should Be
    [Documentation]    Creates fleet ${name} with as many devices as ids are ${expected}, using ${pattern}, and
    ...    checks their ids.
    [Arguments]    ${name}    ${pattern}    @{expected}
    ${count} =    Get Length    ${expected}
    ${fleet} =    Create Local Fleet    simple-temperature-plus    count=${count}    name=${name}
    ...    id_pattern=${pattern}
    ${devices} =    Get Devices    ${fleet}
    Should Be Equal    ${devices}    ${expected}

Unknown State Should Be Refused
    [Documentation]    Get Devices with a state that does not exist is refused by Robot's argument conversion
    ...    (left out of ``robot --dryrun``, which converts arguments too and would count the refusal as a failure).
    [Tags]    robot:no-dry-run
    [Arguments]    ${fleet}
    Run Keyword And Expect Error    *Argument 'state' got value 'asleep' that cannot be converted to DeviceState*
    ...    Get Devices    ${fleet}    state=asleep
