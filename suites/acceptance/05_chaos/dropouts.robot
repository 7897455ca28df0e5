*** Settings ***
Documentation       Drop Devices with every strategy, by count and by percentage, reproducible by seed; the last
...                 will of a dropped device; coming back after reconnect_delay; Reconnect Devices; Wait Until
...                 Dropout Is Complete and its failure. Timings are checked from below (a dropout cannot end
...                 before its last step) with wide upper bounds.
Resource            ../acceptance.resource

Suite Setup         Start Acceptance Environment
Suite Teardown      Stop Acceptance Environment
Test Teardown       Delete All Fleets


*** Test Cases ***
Immediate Dropout Drops Every Chosen Device At Once
    [Documentation]    The chosen devices go silent; the others keep sending.
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=10    name=immediate    id_pattern=immediate-{index}
    ${dropped} =    Drop Devices    ${fleet}    strategy=immediate    count=3    seed=5
    Length Should Be    ${dropped}    3
    Wait Until Dropout Is Complete    ${fleet}    timeout=5s
    ${now dropped} =    Get Devices    ${fleet}    state=dropped
    Should Be Equal    ${{ sorted($dropped) }}    ${now dropped}
    ${silent} =    Readings In    ${dropped}[0]    600ms
    Should Be Equal As Integers    ${silent}    0
    Fleet Stats Should Include    ${fleet}    runningDeviceCount=7    states.dropped=3    dropoutStepsDone=3

A Dropped Device's Last Will Reaches A Subscriber
    [Documentation]    A dropped device closes its connection without DISCONNECT, so the broker publishes the
    ...    model's last will; a fleet that is stopped gracefully publishes none.
    Open Receiver    wills    iotix/acceptance-sensor/+/status
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=4    name=wills    id_pattern=wills-{index}
    ${dropped} =    Drop Devices    ${fleet}    strategy=immediate    count=2    seed=1
    ${wills} =    Wait Until Messages Received    iotix/acceptance-sensor/+/status    count=2    timeout=10s
    ...    alias=wills
    ${topics} =    Evaluate    sorted(m['topic'] for m in $wills if json.loads(m['payload'])['status'] == 'offline')
    ...    modules=json
    Should Be Equal    ${topics}    ${{ sorted(f'iotix/acceptance-sensor/{d}/status' for d in $dropped) }}
    Stop Fleet    ${fleet}
    Sleep    1s    reason=a will published after a graceful stop would arrive within this time
    ${wills} =    Get Received Messages    iotix/acceptance-sensor/+/status    alias=wills
    Length Should Be    ${wills}    2
    [Teardown]    Delete Fleets And Disconnect    wills

Linear Dropout Drops One Device Every Delay
    [Documentation]    4 devices 400 ms apart: the last drops 1.2 s after the first.
    ${fleet} =    Start Local Fleet    simple-temperature-plus    count=6    name=linear    id_pattern=linear-{index}
    ${elapsed} =    Time Dropout    ${fleet}    strategy=linear    count=4    delay=400ms
    Should Be True    1.15 <= ${elapsed} < 10    the dropout took ${elapsed} s, expected about 1.2 s

Exponential Dropout Accelerates
    [Documentation]    Gaps of 800 ms halving each time: drops at 0, 0.8, 1.2, 1.4 and 1.5 s.
    ${fleet} =    Start Local Fleet    simple-temperature-plus    count=6    name=cascade    id_pattern=cascade-{index}
    ${elapsed} =    Time Dropout    ${fleet}    strategy=exponential    count=5    delay=800ms    exponent_base=2
    Should Be True    1.45 <= ${elapsed} < 10    the dropout took ${elapsed} s, expected about 1.5 s

Random Dropout Happens Within Its Duration
    [Documentation]    With seed 3 the three drops fall at 0.94, 1.12 and 1.34 s of a 1.5 s window.
    ${fleet} =    Start Local Fleet    simple-temperature-plus    count=6    name=random    id_pattern=random-{index}
    ${elapsed} =    Time Dropout    ${fleet}    strategy=random    count=3    duration=1500ms    seed=3
    Should Be True    1.3 <= ${elapsed} < 10    the dropout took ${elapsed} s, expected about 1.34 s

A Percentage Chooses A Share Of The Fleet
    [Documentation]    percentage rounds half up (25 % of 10 is 3); count wins over percentage; with neither
    ...    every device drops.
    ${fleet} =    Start Local Fleet    simple-temperature-plus    count=10    name=share    id_pattern=share-{index}
    Dropped Count Should Be    ${fleet}    3    percentage=30
    Dropped Count Should Be    ${fleet}    3    percentage=25
    Dropped Count Should Be    ${fleet}    1    count=1    percentage=50
    Dropped Count Should Be    ${fleet}    10

The Same Seed Chooses The Same Devices
    [Documentation]    The choice depends on the seed and the devices' positions only: the same seed picks the
    ...    same positions in two fleets and in two runs; another seed picks others.
    ${a} =    Start Local Fleet    simple-temperature-plus    count=10    name=seed-a    id_pattern=seed-a-{index}
    ${b} =    Start Local Fleet    simple-temperature-plus    count=10    name=seed-b    id_pattern=seed-b-{index}
    ${from a} =    Drop And Restore    ${a}    seed=42
    ${from b} =    Drop And Restore    ${b}    seed=42
    Should Be Equal    ${from a}    ${{ ['seed-a-4', 'seed-a-7', 'seed-a-9', 'seed-a-0'] }}
    Should Be Equal    ${from b}    ${{ ['seed-b-4', 'seed-b-7', 'seed-b-9', 'seed-b-0'] }}
    ${again} =    Drop And Restore    ${a}    seed=42
    Should Be Equal    ${again}    ${from a}
    ${other} =    Drop And Restore    ${a}    seed=7
    Should Be Equal    ${other}    ${{ ['seed-a-8', 'seed-a-1', 'seed-a-2', 'seed-a-7'] }}

Dropped Devices Come Back After reconnect_delay
    [Documentation]    With reconnect=True each device is back reconnect_delay after it dropped and goes on with
    ...    its sequence numbers, so the receiver sees no gap.
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=4    name=back    id_pattern=back-{index}
    ${t0} =    Evaluate    time.monotonic()    modules=time
    ${dropped} =    Drop Devices    ${fleet}    strategy=immediate    count=2    reconnect=True
    ...    reconnect_delay=1500ms
    Wait Until Device Is In State    ${dropped}[0]    dropped    timeout=1s
    Wait Until Dropout Is Complete    ${fleet}    timeout=10s
    ${elapsed} =    Evaluate    time.monotonic() - ${t0}    modules=time
    Should Be True    1.45 <= ${elapsed} < 10    the devices were back after ${elapsed} s, expected 1.5 s
    Fleet Stats Should Include    ${fleet}    runningDeviceCount=4    reconnects=2    disconnects=2
    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=3    max_loss=0%    timeout=10s

Reconnect Devices Brings Every Dropped Device Back
    [Documentation]    Returns the ids it brought back; with nothing dropped it returns an empty list.
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=5    name=restore    id_pattern=restore-{index}
    ${dropped} =    Drop Devices    ${fleet}    strategy=immediate    count=3    seed=2
    Wait Until Dropout Is Complete    ${fleet}    timeout=5s
    ${back} =    Reconnect Devices    ${fleet}
    Should Be Equal    ${back}    ${{ sorted($dropped) }}
    Wait Until Fleet Is Running    ${fleet}    timeout=10s
    Fleet Stats Should Include    ${fleet}    reconnects=3
    ${none} =    Reconnect Devices    ${fleet}
    Should Be Empty    ${none}
    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=2    max_loss=0%    timeout=10s

Wait Until Dropout Is Complete Fails When It Is Not
    [Documentation]    The failure says how many steps were done; a second dropout must wait for the first;
    ...    a fleet without a dropout has nothing to wait for. Deleting the fleet cancels the dropout.
    ${fleet} =    Start Local Fleet    simple-temperature-plus    count=4    name=slow    id_pattern=slow-{index}
    Drop Devices    ${fleet}    strategy=random    count=2    duration=30s    seed=1
    Run Keyword And Expect Error    Dropout of fleet 'slow' not complete after 1 s: 0 of 2 steps done.
    ...    Wait Until Dropout Is Complete    ${fleet}    timeout=1s
    Run Keyword And Expect Error
    ...    Fleet 'slow' already has a dropout in progress (0 of 2 steps done); wait for it first.
    ...    Drop Devices    ${fleet}    count=1
    ${other} =    Start Local Fleet    simple-temperature-plus    name=calm    id_pattern=calm-{index}
    Run Keyword And Expect Error    Fleet 'calm' has no dropout: use Drop Devices first.
    ...    Wait Until Dropout Is Complete    ${other}

Dropout Errors Name The Fleet
    [Documentation]    Impossible counts and percentages, unknown strategies and fleets, and fleets that are not
    ...    started are refused.
    ${fleet} =    Start Local Fleet    simple-temperature-plus    count=5    name=small    id_pattern=small-{index}
    Run Keyword And Expect Error    Fleet 'small': Cannot drop 20 devices: the fleet has only 5.
    ...    Drop Devices    ${fleet}    count=20
    Run Keyword And Expect Error    Fleet 'small': percentage must be between 0 and 100, got 150.0.
    ...    Drop Devices    ${fleet}    percentage=150
    Unknown Dropout Strategy Should Be Refused    ${fleet}
    Run Keyword And Expect Error    No fleet named 'nope' (fleets: small).    Drop Devices    nope
    ${idle} =    Create Local Fleet    simple-temperature-plus    name=idle    id_pattern=idle-{index}
    Run Keyword And Expect Error    Fleet 'idle' is not started: only devices of a started fleet can drop out*
    ...    Drop Devices    ${idle}    count=1
    Stop Fleet    ${fleet}
    Run Keyword And Expect Error    Fleet 'small' is stopped: *    Drop Devices    ${fleet}    count=1


*** Keywords ***
Time Dropout
    [Documentation]    Drops devices of ${fleet} with ${settings}, checks that right after the call not every
    ...    chosen device has dropped, waits until the dropout is complete and returns the seconds it took.
    [Arguments]    ${fleet}    &{settings}
    ${t0} =    Evaluate    time.monotonic()    modules=time
    ${chosen} =    Drop Devices    ${fleet}    &{settings}
    ${dropped} =    Get Devices    ${fleet}    state=dropped
    Should Be True    len($dropped) < len($chosen)
    Wait Until Dropout Is Complete    ${fleet}    timeout=20s
    ${elapsed} =    Evaluate    time.monotonic() - ${t0}    modules=time
    ${dropped} =    Get Devices    ${fleet}    state=dropped
    Should Be Equal    ${dropped}    ${{ sorted($chosen) }}
    RETURN    ${elapsed}

Drop And Restore
    [Documentation]    Drops 4 devices of ${fleet} at once with ${seed}, waits until they dropped, brings them
    ...    back and returns the ids chosen, in drop order.
    [Arguments]    ${fleet}    ${seed}
    ${chosen} =    Drop Devices    ${fleet}    strategy=immediate    count=4    seed=${seed}
    Wait Until Dropout Is Complete    ${fleet}    timeout=5s
    Reconnect Devices    ${fleet}
    Wait Until Fleet Is Running    ${fleet}    timeout=10s
    RETURN    ${chosen}

Dropped Count Should Be
    [Documentation]    Drops devices of ${fleet} at once with ${settings}, checks that ${expected} were chosen
    ...    and dropped, and brings them back.
    [Arguments]    ${fleet}    ${expected}    &{settings}
    ${chosen} =    Drop Devices    ${fleet}    strategy=immediate    &{settings}
    Length Should Be    ${chosen}    ${expected}
    Wait Until Dropout Is Complete    ${fleet}    timeout=5s
    ${back} =    Reconnect Devices    ${fleet}
    Length Should Be    ${back}    ${expected}
    Wait Until Fleet Is Running    ${fleet}    timeout=10s

Unknown Dropout Strategy Should Be Refused
    [Documentation]    Drop Devices with a strategy that does not exist is refused by Robot's argument conversion
    ...    (left out of ``robot --dryrun``, which converts arguments too and would count the refusal as a failure).
    [Tags]    robot:no-dry-run
    [Arguments]    ${fleet}
    Run Keyword And Expect Error
    ...    ValueError: Argument 'strategy' got value 'sideways' that cannot be converted to DropoutStrategy*
    ...    Drop Devices    ${fleet}    strategy=sideways
