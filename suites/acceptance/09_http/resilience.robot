*** Settings ***
Documentation       Resilient delivery against a backend that fails as a whole (tiny_http_server.py switched to
...                 answering 500 to every reading): failed requests are retried with backoff and counted, the
...                 fleet's circuit breaker opens (sends are not attempted, counted as ``circuit_open``), devices
...                 whose sends keep failing go to state ``error``; when the backend recovers the circuit closes and
...                 the devices go back to ``running``. Each device's transmission log shows it all, also as CSV.
Resource            http.resource
Library             Collections
Library             RequestsLibrary

Suite Setup         Start Acceptance Environment
Suite Teardown      Stop Acceptance Environment
Test Teardown       Stop Tiny HTTP Servers


*** Variables ***
&{RESILIENT}        max_retries=2    circuit_threshold=6    circuit_cooldown=1s    error_threshold=3


*** Test Cases ***
The Circuit Opens On A 500 Storm And Closes When The Backend Recovers
    [Documentation]    Every request gets 500: retries are counted, the circuit opens and refuses sends,
    ...    all devices go to state error. The backend recovers: the circuit closes, all devices run again.
    ${port} =    Start Healthy Backend
    ${fleet} =    Start Generic Fleet    brk    ${port}    count=4    &{RESILIENT}
    Circuit Should Be    ${fleet}    closed
    Set Backend Answer    ${port}    500
    All Devices Should Fail Behind An Open Circuit    ${fleet}    brk
    Set Backend Answer    ${port}    201
    Circuit Should Be    ${fleet}    closed    timeout=15s
    Devices In State Should Be    ${fleet}    running    4    timeout=10s
    Fleet Stats Should Include    ${fleet}    devicesRecovered=4    states.error=0

A Client Error Does Not Open The Circuit
    [Documentation]    400s are the request's fault, not the backend's: no retry, the circuit stays closed, the
    ...    devices go to state error (their own sends keep failing).
    ${port} =    Start Healthy Backend
    ${fleet} =    Start Generic Fleet    bad    ${port}    count=2    &{RESILIENT}
    Set Backend Answer    ${port}    400
    Devices In State Should Be    ${fleet}    error    2    timeout=10s
    Circuit Should Be    ${fleet}    closed
    ${stats} =    Get Fleet Stats    ${fleet}
    Should Be Equal As Integers    ${stats}[retries]    0
    Should Be True    ${stats}[failuresByReason][http_400] >= 6

The Transmission Log Shows Each Attempt
    [Documentation]    Get Transmission Log returns the device's last entries oldest first, with result,
    ...    bytes, latency and error; ``last`` keeps the newest ones.
    ${port} =    Start Healthy Backend
    ${fleet} =    Start Generic Fleet    txl    ${port}    count=2    &{RESILIENT}
    Wait Until Keyword Succeeds    10s    200ms    Device Should Have Delivered More Than    txl-0    2
    Set Backend Answer    ${port}    503
    Circuit Should Be    ${fleet}    open    timeout=10s
    ${log} =    Get Transmission Log    txl-0    last=500
    Results Should Include    ${log}    ok    retrying    failed    circuit_open
    Log Should Have A Failure    ${log}    HTTP 503 from POST http://127.0.0.1:${port}/sensors/0/readings: backend failing
    ${last 3} =    Get Transmission Log    txl-0    last=3
    Should Be Equal    ${last 3}    ${log}[-3:]    The newest 3 entries, in the same order

The Transmission Log Of A Fleet Exports To CSV
    [Documentation]    Export Transmission Log writes the entries of every device with a header row.
    ${port} =    Start Healthy Backend
    ${fleet} =    Start Generic Fleet    csv    ${port}    count=2    &{RESILIENT}
    Wait Until Keyword Succeeds    10s    200ms    Device Should Have Delivered More Than    csv-1    2
    ${csv} =    Export Transmission Log    ${fleet}    ${WORKDIR}/transmissions.csv
    ${rows} =    Evaluate    list(csv.DictReader(open($csv, encoding='utf-8')))    modules=csv
    Should Be Equal    ${rows}[0][deviceId]    csv-0
    Should Be Equal    ${rows}[0][result]    ok
    ${devices} =    Evaluate    sorted({r['deviceId'] for r in $rows})
    Lists Should Be Equal    ${devices}    ${{ ['csv-0', 'csv-1'] }}

Cells A Spreadsheet Would Run Are Neutralised In The Export
    [Documentation]    A device id that starts like a formula (``@``, ``=``, ``+``, ``-``) is written with a
    ...    leading ``'`` so that a spreadsheet shows it instead of running it.
    ${port} =    Start Healthy Backend
    ${fleet} =    Create Fleet    acceptance-http-generic    name=formula    id_pattern=@SUM-{index}
    ...    host=127.0.0.1    port=${port}
    Start Fleet    ${fleet}
    Wait Until Keyword Succeeds    10s    200ms    Device Should Have Delivered More Than    @SUM-0    0
    ${csv} =    Export Transmission Log    ${fleet}    ${WORKDIR}/formula.csv
    ${rows} =    Evaluate    list(csv.DictReader(open($csv, encoding='utf-8')))    modules=csv
    Should Be Equal    ${rows}[0][deviceId]    '@SUM-0


*** Keywords ***
Start Healthy Backend
    [Documentation]    Starts a tiny HTTP server that answers 201 to every reading; returns its port.
    ${port} =    Start Tiny HTTP Server
    Set Backend Answer    ${port}    201
    RETURN    ${port}

Set Backend Answer
    [Documentation]    Makes the tiny server on ${port} answer every reading with ${status}.
    [Arguments]    ${port}    ${status}
    ${response} =    PUT    http://127.0.0.1:${port}/control/answer/${status}
    Should Be Equal As Integers    ${response.status_code}    204

All Devices Should Fail Behind An Open Circuit
    [Documentation]    The circuit of ${fleet} opens, its devices ${prefix}-0..3 go to state error, retries and
    ...    500s and refused sends are counted.
    [Arguments]    ${fleet}    ${prefix}
    Circuit Should Be    ${fleet}    open    timeout=10s
    Devices In State Should Be    ${fleet}    error    4    timeout=10s
    ${in error} =    Get Devices    ${fleet}    state=error
    VAR    @{expected}    ${prefix}-0    ${prefix}-1    ${prefix}-2    ${prefix}-3
    Lists Should Be Equal    ${in error}    ${expected}
    ${stats} =    Get Fleet Stats    ${fleet}
    Should Be True    ${stats}[retries] > 0 and ${stats}[failuresByReason][http_500] > 0
    Wait Until Keyword Succeeds    10s    200ms    Reason Should Have Been Counted    ${fleet}    circuit_open

Reason Should Have Been Counted
    [Documentation]    Fails unless fleet ${fleet} counted a failure with reason ${reason}.
    [Arguments]    ${fleet}    ${reason}
    ${stats} =    Get Fleet Stats    ${fleet}
    Dictionary Should Contain Key    ${stats}[failuresByReason]    ${reason}

Results Should Include
    [Documentation]    Fails unless the transmission log ${log} has entries with each of ${results}.
    [Arguments]    ${log}    @{results}
    ${seen} =    Evaluate    {e['result'] for e in $log}
    FOR    ${result}    IN    @{results}
        Should Contain    ${seen}    ${result}    No '${result}' entry in the log; results seen: ${seen}
    END

Log Should Have A Failure
    [Documentation]    Fails unless the transmission log ${log} has a ``failed`` entry with ${error} and its bytes.
    [Arguments]    ${log}    ${error}
    FOR    ${entry}    IN    @{log}
        IF    $entry['result'] == 'failed' and $entry['error'] == $error and $entry['bytes'] > 0    RETURN
    END
    Fail    No failed entry with error '${error}' in the log: ${log}
