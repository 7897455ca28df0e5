*** Settings ***
Documentation       An environmental sensor fleet launched in batches; every reading must arrive.
Resource            ../../resources/iotix.resource

Suite Setup         Start Local Test Environment


*** Test Cases ***
Batch Launch Delivers Every Reading
    [Documentation]    200 environmental sensors start in batches of 50 every 500 ms and send for a while;
    ...    the receiver must see every message each device sent, with no gaps and no duplicates.
    ${fleet} =    Create Local Fleet    environmental-sensor-plus    count=200    name=env
    ...    id_pattern=env-{index:03d}    seed=42
    Start Fleet    ${fleet}    strategy=batch    batch_size=50    delay=500ms
    Wait Until Fleet Is Running    ${fleet}    timeout=30s
    Sleep    3s    reason=let the fleet send a few rounds
    ${report} =    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=2    max_loss=0%
    Should Be Equal As Integers    ${report}[duplicates]    0
    ${stats} =    Get Fleet Stats    ${fleet}
    Should Be Equal As Integers    ${stats}[runningDeviceCount]    200
    Should Be Equal As Integers    ${stats}[messagesFailed]    0
    Stop Fleet    ${fleet}
