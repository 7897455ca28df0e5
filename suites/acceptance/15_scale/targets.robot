*** Settings ***
Documentation       Several targets (device i goes to target i mod n) and local source addresses (device i binds
...                 address i mod m) through Create Fleet; both are checked before anything is created.
Resource            ../acceptance.resource

Suite Setup         Start Acceptance Environment
Suite Teardown      Stop Acceptance Environment
Test Teardown       Delete All Fleets


*** Test Cases ***
Devices Spread Over Targets And Source Addresses
    [Documentation]    The one local broker listed twice (two targets) and two source addresses.
    VAR    ${host}    ${BROKER}[host]:${BROKER}[port],${BROKER}[host]
    ${fleet} =    Create Fleet    acceptance-sensor    count=4    name=spread    host=${host}
    ...    port=${BROKER}[port]    source_addresses=127.0.0.2-127.0.0.3
    Start Fleet    ${fleet}
    Wait Until Fleet Is Running    ${fleet}
    ${stats} =    Get Fleet Stats    ${fleet}
    Should Be Equal    ${stats}[target]    mqtt://${BROKER}[host]:${BROKER}[port],${BROKER}[host]:${BROKER}[port]
    Should Be Equal    ${stats}[transport][sourceAddresses]    ${{ ['127.0.0.2', '127.0.0.3'] }}

Several Targets On A CoAP Fleet Fail Naming The Fleet
    [Documentation]    MQTT only.
    Run Keyword And Expect Error    *host names 2 targets*MQTT fleets only and fleet 'plugs' is a coap fleet*
    ...    Create Fleet    coap-smart-plug    name=plugs    host=127.0.0.1:5683,127.0.0.1:5684

A Backwards Range Fails Naming It
    [Documentation]    Checked before anything is created.
    Run Keyword And Expect Error    *source_addresses '127.0.0.9-127.0.0.2': the range*runs backwards*
    ...    Create Fleet    acceptance-sensor    source_addresses=127.0.0.9-127.0.0.2
