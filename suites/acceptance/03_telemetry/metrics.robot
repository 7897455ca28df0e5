*** Settings ***
Documentation       Metrics: Get Telemetry Report, Latency Should Be Below and Export Telemetry Report. Each test
...                 counts at a receiver of its own, so figures of other tests' fleets cannot mix in.
Resource            ../acceptance.resource
Library             Collections

Suite Setup         Start Acceptance Environment
Suite Teardown      Stop Acceptance Environment
Test Teardown       Delete All Fleets


*** Variables ***
@{REPORT KEYS}      devices    expected    received    lost    lossPercent    duplicates    outOfOrder    silentDevices
...                 invalidMessages    latencyMs    worstDevices
@{LATENCY KEYS}     count    min    mean    p50    p90    p99    max


*** Test Cases ***
Get Telemetry Report Describes What Arrived
    [Documentation]    Expected, received and lost messages, duplicates, reordering and the latency summary.
    ${fleet} =    Start Measured Fleet    report    count=3
    ${report} =    Get Telemetry Report    ${fleet}    source=report    timeout=5s
    FOR    ${key}    IN    @{REPORT KEYS}
        Dictionary Should Contain Key    ${report}    ${key}
    END
    FOR    ${key}    IN    @{LATENCY KEYS}
        Dictionary Should Contain Key    ${report}[latencyMs]    ${key}
    END
    Values Should Include    report    ${report}    devices=3    lost=0    lossPercent=0.0    duplicates=0
    ...    silentDevices=0    invalidMessages=0
    Should Be True    9 <= ${report}[received] == ${report}[expected] <= ${report}[latencyMs][count]
    Should Be True    0 <= ${report}[latencyMs][p50] <= ${report}[latencyMs][p99] <= ${report}[latencyMs][max]
    [Teardown]    Delete Fleets And Disconnect    report

The Report Names The Devices That Were Not Heard
    [Documentation]    A report is not an assertion: with two of three devices unheard it returns their ids
    ...    among the worst devices and counts them as silent.
    Open Receiver    one-device    iotix/acceptance-sensor/silent-0/telemetry
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=3    name=silent    id_pattern=silent-{index}
    Wait Until Fleet Has Sent    ${fleet}    9
    ${report} =    Get Telemetry Report    ${fleet}    source=one-device    timeout=1s
    Values Should Include    report    ${report}    devices=3    silentDevices=2
    Should Be True    ${report}[lost] > 0
    ${worst} =    Evaluate    sorted(d['deviceId'] for d in $report['worstDevices'])
    Should Be Equal    ${worst}    ${{ ['silent-1', 'silent-2'] }}
    [Teardown]    Delete Fleets And Disconnect    one-device

Latency Below A Generous Limit Passes
    [Documentation]    Returns the measured percentile in milliseconds.
    ${fleet} =    Start Measured Fleet    fast    count=2
    ${p99} =    Latency Should Be Below    ${fleet}    10s    source=fast
    ${p50} =    Latency Should Be Below    ${fleet}    10s    percentile=50    source=fast
    Should Be True    0 <= ${p50} <= ${p99} < 10000
    [Teardown]    Delete Fleets And Disconnect    fast

Latency Not Below The Limit Fails
    [Documentation]    The failure names the fleet, the percentile, the value, the limit and the receiver.
    ${fleet} =    Start Measured Fleet    slow    count=2
    ${error} =    Run Keyword And Expect Error    Fleet 'slow': p99 latency is * ms, not below 0 ms*
    ...    Latency Should Be Below    ${fleet}    0s    source=slow
    Should End With    ${error}    [receiver 'slow'].
    Run Keyword And Expect Error    Fleet 'slow': p90 latency is * ms, not below 0 ms*
    ...    Latency Should Be Below    ${fleet}    0ms    percentile=90    source=slow
    [Teardown]    Delete Fleets And Disconnect    slow

Latency Should Be Below Waits Up To Its Timeout For Telemetry
    [Documentation]    The only device is dropped and comes back 1.5 s later; its receiver subscribed while it was
    ...    away. With timeout=0s nothing has arrived yet and the check fails at once; with a timeout it waits
    ...    for the device's messages and passes.
    ${fleet} =    Start Local Fleet    acceptance-sensor    name=patient    id_pattern=patient-{index}
    Drop Devices    ${fleet}    strategy=immediate    reconnect=True    reconnect_delay=1500ms
    Wait Until Device Is In State    patient-0    dropped    timeout=2s
    Open Receiver    patient    iotix/acceptance-sensor/+/telemetry
    Run Keyword And Expect Error
    ...    No telemetry from fleet 'patient' arrived at 'patient' within 0 s: no latency to check.
    ...    Latency Should Be Below    ${fleet}    10s    source=patient    timeout=0s
    ${t0} =    Now
    ${p99} =    Latency Should Be Below    ${fleet}    10s    source=patient    timeout=20s
    Should Be True    0 <= ${p99} < 10000
    ${waited} =    Seconds Since    ${t0}
    Should Be True    0.2 < ${waited} < 15    waited ${waited} s for the device to come back
    [Teardown]    Delete Fleets And Disconnect    patient

Latency Needs Telemetry And A Percentile Between 0 And 100
    [Documentation]    A receiver that got nothing has no latency to check; a percentile of 0 or above 100 is
    ...    refused.
    ${fleet} =    Create Local Fleet    acceptance-sensor    name=no-latency
    Open Receiver    nothing    acceptance/metrics/nothing
    Run Keyword And Expect Error    No telemetry from fleet 'no-latency' arrived at 'nothing': no latency to check.
    ...    Latency Should Be Below    ${fleet}    1s    source=nothing
    Run Keyword And Expect Error    percentile must be in (0, 100], got 0.0.
    ...    Latency Should Be Below    ${fleet}    1s    percentile=0    source=nothing
    Run Keyword And Expect Error    percentile must be in (0, 100], got 101.0.
    ...    Latency Should Be Below    ${fleet}    1s    percentile=101    source=nothing
    [Teardown]    Delete Fleets And Disconnect    nothing

Export Telemetry Report Writes The Report And The Counters As JSON
    [Documentation]    The file holds the fleet's counters under 'fleet' and the telemetry report under
    ...    'telemetry'.
    ${fleet} =    Start Measured Fleet    export    count=2
    Stop Fleet    ${fleet}
    ${path} =    Export Telemetry Report    ${fleet}    ${WORKDIR}/reports/export.json    source=export
    Should Be Equal    ${path}    ${{ pathlib.Path($WORKDIR) / 'reports' / 'export.json' }}
    ${content} =    Get File    ${path}
    ${data} =    Evaluate    json.loads($content)    modules=json
    Values Should Include    export    ${data}    fleet.fleet=export    fleet.deviceCount=2    telemetry.devices=2
    ...    telemetry.lost=0
    Should Be Equal    ${data}[telemetry][received]    ${data}[fleet][messagesSent]
    [Teardown]    Delete Fleets And Disconnect    export

Metrics Keywords Need An Existing Fleet And Receiver
    [Documentation]    Unknown fleets and receivers are named in the failure.
    ${fleet} =    Create Local Fleet    acceptance-sensor    name=metrics-args
    Run Keyword And Expect Error    No fleet named 'nope' (fleets: metrics-args).
    ...    Get Telemetry Report    nope
    Run Keyword And Expect Error    No receiver named 'ghost' (available: 'default')*
    ...    Get Telemetry Report    ${fleet}    source=ghost
    Run Keyword And Expect Error    No receiver named 'ghost'*
    ...    Export Telemetry Report    ${fleet}    ${WORKDIR}/ghost.json    source=ghost
    Run Keyword And Expect Error    No fleet named 'nope'*
    ...    Latency Should Be Below    nope    1s


*** Keywords ***
Start Measured Fleet
    [Documentation]    Opens receiver ${name} on the acceptance sensors' telemetry, then starts fleet ${name} of
    ...    ${count} acceptance sensors (ids ${name}-{index}) and waits until each sent a few readings.
    [Arguments]    ${name}    ${count}
    Open Receiver    ${name}    iotix/acceptance-sensor/+/telemetry
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=${count}    name=${name}    id_pattern=${name}-{index}
    Wait Until Fleet Has Sent    ${fleet}    ${{ 3 * ${count} }}
    RETURN    ${fleet}
