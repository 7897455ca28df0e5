*** Settings ***
Documentation       Start Fleet with every launch strategy, Wait Until Fleet Is Running (and its failure when the
...                 devices cannot connect), Stop Fleet and starting a stopped fleet again.
...
...                 Launch timings are checked from below (a launch cannot end before its last device's offset)
...                 and with wide upper bounds, through launchedDeviceCount of Get Fleet Stats.
Resource            ../acceptance.resource

Suite Setup         Start Acceptance Environment
Suite Teardown      Stop Acceptance Environment
Test Teardown       Delete All Fleets


*** Test Cases ***
A Started Fleet Runs And Sends Until It Is Stopped
    [Documentation]    Stop Fleet disconnects every device; the counters stay readable and stop growing.
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=3    name=run-stop    id_pattern=run-stop-{index}
    Wait Until Fleet Has Sent    ${fleet}    9
    Stop Fleet    ${fleet}
    ${stopped} =    Fleet Stats Should Include    ${fleet}    state=stopped    states.stopped=3    messagesFailed=0
    ${devices} =    Get Devices    ${fleet}    state=stopped
    Length Should Be    ${devices}    3
    Sleep    500ms    reason=a stopped fleet must not send
    Fleet Stats Should Include    ${fleet}    messagesSent=${stopped}[messagesSent]
    Run Keyword And Expect Error    Fleet 'run-stop' is stopped: use Start Fleet first.
    ...    Wait Until Fleet Is Running    ${fleet}    timeout=1 minute

A Stopped Fleet Can Be Started Again
    [Documentation]    The devices connect again and go on with their sequence numbers.
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=2    name=again    id_pattern=again-{index}
    Wait Until Fleet Has Sent    ${fleet}    4
    Stop Fleet    ${fleet}
    ${before} =    Get Device Status    again-0
    Start Fleet    ${fleet}
    Wait Until Fleet Is Running    ${fleet}
    Wait Until Fleet Has Sent    ${fleet}    ${{ ${before}[messagesSent] * 2 + 4 }}
    ${after} =    Device Status Should Include    again-0    connects=2    state=running
    Should Be True    ${before}[nextSeq] < ${after}[nextSeq] == ${after}[messagesSent]
    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=2    max_loss=0%    timeout=10s

Starting A Running Fleet Is Refused
    [Documentation]    A fleet is started once; Stop Fleet first to start it again.
    ${fleet} =    Start Local Fleet    simple-temperature-plus    name=twice
    Run Keyword And Expect Error    Fleet 'twice' is already running; stop it before starting again.
    ...    Start Fleet    ${fleet}

Waiting For A Fleet That Was Never Started Fails At Once
    [Documentation]    The message says what to do instead of waiting for the timeout.
    ${fleet} =    Create Local Fleet    simple-temperature-plus    name=idle
    Run Keyword And Expect Error    Fleet 'idle' was never started: use Start Fleet first.
    ...    Wait Until Fleet Is Running    ${fleet}    timeout=1 minute
    Run Keyword And Expect Error    No fleet named 'nobody' (fleets: idle).
    ...    Wait Until Fleet Is Running    nobody

Immediate Launch Starts Every Device At Once
    [Documentation]    All offsets are 0: right after the wait every device is launched and running.
    ${fleet} =    Create Local Fleet    simple-temperature-plus    count=20    name=immediate
    Start Fleet    ${fleet}    strategy=immediate
    Wait Until Fleet Is Running    ${fleet}    timeout=20s
    ${stats} =    Get Fleet Stats    ${fleet}
    Should Be Equal As Integers    ${stats}[launchedDeviceCount]    20
    Should Be Equal As Integers    ${stats}[runningDeviceCount]    20

Linear Launch Starts One Device Every Delay
    [Documentation]    5 devices, 400 ms apart: the last one starts 1.6 s after the first.
    ${fleet} =    Create Local Fleet    simple-temperature-plus    count=5    name=linear
    ${elapsed} =    Time Launch    ${fleet}    strategy=linear    delay=400ms
    Should Be True    1.55 <= ${elapsed} < 10    the launch took ${elapsed} s, expected about 1.6 s

Batch Launch Starts The Devices In Batches
    [Documentation]    6 devices in batches of 2, 1.5 s apart: at 0.6 s only the first batch has launched,
    ...    the last batch starts at 3 s.
    ${fleet} =    Create Local Fleet    simple-temperature-plus    count=6    name=batch
    ${t0} =    Evaluate    time.monotonic()    modules=time
    Start Fleet    ${fleet}    strategy=batch    batch_size=2    delay=1500ms
    Sleep    600ms
    ${stats} =    Get Fleet Stats    ${fleet}
    Should Be Equal As Integers    ${stats}[launchedDeviceCount]    2
    Wait Until Fleet Is Running    ${fleet}
    ${elapsed} =    Evaluate    time.monotonic() - ${t0}    modules=time
    Should Be True    2.95 <= ${elapsed} < 12    the launch took ${elapsed} s, expected about 3 s

Exponential Launch Grows The Gaps Up To max_delay
    [Documentation]    Gaps of 100 ms x 3^i capped at 500 ms: 100, 300, 500, 500, 500 ms, so the sixth device
    ...    starts at 1.9 s (without the cap it would be 12.1 s).
    ${fleet} =    Create Local Fleet    simple-temperature-plus    count=6    name=exponential
    ${elapsed} =    Time Launch    ${fleet}    strategy=exponential    delay=100ms    exponent_base=3
    ...    max_delay=500ms
    Should Be True    1.85 <= ${elapsed} < 8    the launch took ${elapsed} s, expected about 1.9 s

Invalid Launch Settings Are Refused
    [Documentation]    An unknown strategy is refused by Robot's argument conversion, a batch size of 0 by the
    ...    keyword, naming the fleet.
    ${fleet} =    Create Local Fleet    simple-temperature-plus    name=bad-launch
    Unknown Launch Strategy Should Be Refused    ${fleet}
    Run Keyword And Expect Error    Fleet 'bad-launch': batch_size must be at least 1, got 0.
    ...    Start Fleet    ${fleet}    strategy=batch    batch_size=0
    Run Keyword And Expect Error    Fleet 'bad-launch': exponent_base must be at least 1, got 0.5.
    ...    Start Fleet    ${fleet}    strategy=exponential    exponent_base=0.5

A Fleet Pointed At A Closed Port Does Not Run While Another Fleet Does
    [Documentation]    Wait Until Fleet Is Running fails naming how many devices are not running and why;
    ...    the devices keep retrying with backoff and the other fleet is not disturbed.
    ${good} =    Start Local Fleet    acceptance-sensor    count=2    name=good    id_pattern=good-{index}
    ${closed} =    Start Fleet At A Closed Port    simple-temperature-plus    count=4    name=closed
    ${error} =    Run Keyword And Expect Error
    ...    Fleet 'closed': 4 of 4 devices not running after 2 s (launched 4 of 4; states: connecting 4).*
    ...    Wait Until Fleet Is Running    ${closed}    timeout=2s
    Should Match    ${error}
    ...    * 4 devices (closed-0, closed-1, closed-2 and 1 more): cannot reach broker 127.0.0.1:1: *
    ${status} =    Device Status Should Include    closed-0    state=connecting    messagesSent=0
    Should Match    ${status}[lastError]    *cannot reach broker 127.0.0.1:1*
    ${stats} =    Fleet Stats Should Include    ${closed}    runningDeviceCount=0    messagesSent=0
    Should Be True    ${stats}[connectFailures] >= 4
    Wait Until Fleet Has Sent    ${good}    6
    Telemetry Should Be Received From Fleet    ${good}    min_messages=3    max_loss=0%    timeout=10s


*** Keywords ***
Time Launch
    [Documentation]    Starts ${fleet} with the launch settings given, checks that right after the start not
    ...    every device has been launched, waits until all run and returns the seconds that took.
    [Arguments]    ${fleet}    &{settings}
    ${t0} =    Evaluate    time.monotonic()    modules=time
    Start Fleet    ${fleet}    &{settings}
    ${stats} =    Get Fleet Stats    ${fleet}
    Should Be True    ${stats}[launchedDeviceCount] < ${stats}[deviceCount]
    Wait Until Fleet Is Running    ${fleet}
    ${elapsed} =    Evaluate    time.monotonic() - ${t0}    modules=time
    RETURN    ${elapsed}

Start Fleet At A Closed Port
    [Documentation]    Creates a fleet of ${model} pointed at 127.0.0.1:1, where nothing listens, with a short
    ...    reconnect backoff, and starts it. Device ids are <name>-{index}. Returns the fleet name.
    [Arguments]    ${model}    ${count}    ${name}
    ${fleet} =    Create Fleet    ${model}    count=${count}    name=${name}    host=127.0.0.1    port=1
    ...    reconnect_base=200ms    reconnect_cap=1s
    Start Fleet    ${fleet}
    RETURN    ${fleet}

Unknown Launch Strategy Should Be Refused
    [Documentation]    Start Fleet with a strategy that does not exist is refused by Robot's argument conversion
    ...    (left out of ``robot --dryrun``, which converts arguments too and would count the refusal as a failure).
    [Tags]    robot:no-dry-run
    [Arguments]    ${fleet}
    Run Keyword And Expect Error
    ...    ValueError: Argument 'strategy' got value 'sideways' that cannot be converted to LaunchStrategy*
    ...    Start Fleet    ${fleet}    strategy=sideways
