*** Settings ***
Documentation       A cascading (exponential) dropout with reconnect; the fleet must recover fully.
Resource            ../../resources/iotix.resource

Suite Setup         Start Local Test Environment


*** Test Cases ***
Fleet Recovers From A Cascading Dropout
    [Documentation]    20 of 50 sensors drop in an accelerating cascade and come back 2 s later;
    ...    afterwards every device runs and nothing sent was lost.
    ${fleet} =    Create Local Fleet    simple-temperature-plus    count=50    name=cascade
    ...    id_pattern=cascade-{index:02d}
    Start Fleet    ${fleet}
    Wait Until Fleet Is Running    ${fleet}
    ${dropped} =    Drop Devices    ${fleet}    strategy=exponential    count=20    delay=1s
    ...    exponent_base=2    reconnect=True    reconnect_delay=2s    seed=7
    Length Should Be    ${dropped}    20
    Wait Until Dropout Is Complete    ${fleet}    timeout=60s
    Wait Until Fleet Is Running    ${fleet}
    ${stats} =    Get Fleet Stats    ${fleet}
    Should Be True    ${stats}[reconnects] >= 20
    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=1    max_loss=0%
