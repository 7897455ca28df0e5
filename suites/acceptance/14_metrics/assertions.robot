*** Settings ***
Documentation       The figures of a fleet second by second and the assertions over them: a row per second that
...                 adds up to the fleet's counters, rates and error rates over a window, devices connected, loss
...                 at the receiver and latency over a window; each failure names the fleet, window and figures.
Resource            ../acceptance.resource

Suite Setup         Start Acceptance Environment
Suite Teardown      Stop Acceptance Environment
Test Teardown       Delete All Fleets


*** Variables ***
# acceptance-sensor sends one reading every 200 ms: 4 devices send 20 messages a second.
${DEVICES}      4
${RATE}         20


*** Test Cases ***
The Time Series Adds Up To The Fleet's Counters
    [Documentation]    One row per second while the fleet runs; the rows' messages add up to what the fleet sent.
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=${DEVICES}    name=rows    id_pattern=rows-{index}
    Sleep    3.5s
    Stop Fleet    ${fleet}
    ${rows} =    Get Fleet Time Series    ${fleet}
    ${stats} =    Get Fleet Stats    ${fleet}
    Should Be True    len($rows) >= 3
    ${sent} =    Evaluate    sum(row['sent'] for row in $rows)
    Should Be Equal As Integers    ${sent}    ${stats}[messagesSent]
    Should Be Equal As Integers    ${rows}[1][connected]    ${DEVICES}
    Should Be True    ${rows}[1][latenessMs][count] > 0

The Message Rate Is Judged Over The Window
    [Documentation]    20 msg/s passes between 15 and 25; asking for 100 fails naming the figures.
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=${DEVICES}    name=rate    id_pattern=rate-{index}
    ${rate} =    Message Rate Should Be    ${fleet}    at_least=15    at_most=25    window=3s
    Should Be True    15 <= ${rate} <= 25
    VAR    ${too_high}    ${100}
    Run Keyword And Expect Error    Fleet 'rate': * msg/s over the last 3 s (* messages), not at least 100 msg/s.
    ...    Message Rate Should Be    ${fleet}    at_least=${too_high}    window=3s

Connected Devices Follow A Dropout
    [Documentation]    All 4 connected and no errors; 2 dropped leaves 2; expecting 4 then fails naming the states.
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=${DEVICES}    name=conn    id_pattern=conn-{index}
    Connected Devices Should Be    ${fleet}    ${DEVICES}
    Error Rate Should Be Below    ${fleet}    1    window=2s
    Drop Devices    ${fleet}    count=2    seed=1
    Connected Devices Should Be    ${fleet}    2    timeout=5s
    Run Keyword And Expect Error    Fleet 'conn': 2 of 4 devices connected after 1 s, expected 4 (states: *dropped 2*).
    ...    Connected Devices Should Be    ${fleet}    ${DEVICES}    timeout=1s

Loss And Latency Over A Window
    [Documentation]    Nothing lost at the receiver; the end-to-end and lateness p99 of the last 3 s are well
    ...    below 1 s on a local broker.
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=${DEVICES}    name=lat    id_pattern=lat-{index}
    Sleep    3.5s
    Loss Should Be Below    ${fleet}    1
    ${e2e} =    Latency Should Be Below    ${fleet}    1s    window=3s
    ${late} =    Latency Should Be Below    ${fleet}    1s    window=3s    kind=lateness
    Should Be True    0 <= ${late} < 1000 and 0 <= ${e2e} < 1000
