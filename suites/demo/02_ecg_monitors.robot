*** Settings ***
Documentation       ECG monitors stream binary samples; a forced heart rate raises the arrhythmia alert.
Resource            ../../resources/iotix.resource

Suite Setup         Start Local Test Environment


*** Test Cases ***
ECG Monitors Stream Binary Samples
    [Documentation]    Each ECG reading carries 200 16-bit samples (400 bytes, base64 in the JSON envelope).
    Subscribe To Topic    iotix/+/+/telemetry    qos=1
    ${fleet} =    Create Local Fleet    ecg-monitor-plus    count=5    name=ecg    id_pattern=ecg-{index}
    Start Fleet    ${fleet}
    Wait Until Fleet Is Running    ${fleet}
    ${messages} =    Wait Until Messages Received    iotix/+/+/telemetry    count=20    timeout=10s
    ${ecg} =    Evaluate    [json.loads(m['payload']) for m in $messages if 'ecg' in json.loads(m['payload'])]
    ...    modules=json
    Should Not Be Empty    ${ecg}
    ${samples} =    Evaluate    len(base64.b64decode($ecg[0]['ecg']))    modules=base64
    Should Be Equal As Integers    ${samples}    400
    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=3

High Heart Rate Raises The Arrhythmia Alert
    [Documentation]    Forcing heartRate to 130 makes the model's behavior publish an alert.
    Subscribe To Topic    iotix/+/+/alerts    qos=1
    Set Telemetry Override    ecg-0    heartRate    130
    ${alerts} =    Wait Until Messages Received    iotix/+/+/alerts    count=1    timeout=10s
    Should Contain    ${alerts}[0][payload]    130
    Clear Telemetry Override    ecg-0    heartRate
