*** Settings ***
Documentation       Passwords are Robot Secrets: created from environment variables with the ${name: Secret}
...                 syntax (Robot Framework 7.4+), accepted by Create Fleet and Connect To MQTT Broker, refused as
...                 plain text, really sent to the broker, and never logged (tests/integration/test_secrets.py runs
...                 this suite at TRACE level and searches its output for the password).
Resource            ../acceptance.resource
Library             PasswordBroker.py

Suite Setup         Start Secrets Environment
Suite Teardown      Stop Secrets Environment
Test Teardown       Delete All Fleets


*** Variables ***
${USERNAME}                 iotix-device
${PASSWORD: Secret}         %{IOTIX_TEST_PASSWORD=iotix-acceptance-password}
${WRONG PASSWORD: Secret}   %{IOTIX_TEST_WRONG_PASSWORD=not-the-password}


*** Test Cases ***
A Fleet Logs In With A Secret Password
    [Documentation]    The broker accepts only this username and password, so running devices prove that the
    ...    password itself (not its masked text) reached it.
    ${fleet} =    Create Secured Fleet    secured    ${PASSWORD}
    Start Fleet    ${fleet}
    Wait Until Fleet Is Running    ${fleet}    timeout=10s
    Wait Until Fleet Has Sent    ${fleet}    4

The Fleets Of A Scenario Log In With A Secret Password
    [Documentation]    Create Fleets From Scenario hands its Secret password to every fleet of the scenario (a
    ...    scenario file never holds one): all nine devices of the home preset run on the protected broker.
    ${fleets} =    Create Fleets From Scenario    ${MODELS}/scenarios/home.yaml    host=${SECURED}[host]
    ...    port=${SECURED}[port]    username=${USERNAME}    password=${PASSWORD}    reconnect_base=200ms
    ...    reconnect_cap=1s
    Length Should Be    ${fleets}    5
    FOR    ${fleet}    IN    @{fleets}
        Start Fleet    ${fleet}
    END
    FOR    ${fleet}    IN    @{fleets}
        Wait Until Fleet Is Running    ${fleet}    timeout=10s
    END

A Wrong Password Is Refused By The Broker
    [Documentation]    Wait Until Fleet Is Running names the devices and the broker's refusal.
    ${fleet} =    Create Secured Fleet    refused    ${WRONG PASSWORD}
    Start Fleet    ${fleet}
    ${error} =    Run Keyword And Expect Error    Fleet 'refused': 2 of 2 devices not running after 3 s*
    ...    Wait Until Fleet Is Running    ${fleet}    timeout=3s
    Should Match Regexp    ${error}    (?i)not auth|bad user ?name or password
    ${status} =    Get Device Status    refused-0
    Should Not Be True    $WRONG_PASSWORD.value in repr($status) or $WRONG_PASSWORD.value in $error

A Fleet Without Credentials Is Refused
    [Documentation]    The protected broker refuses anonymous devices.
    ${fleet} =    Create Fleet    acceptance-sensor    count=1    name=anonymous    host=${SECURED}[host]
    ...    port=${SECURED}[port]    reconnect_base=200ms    reconnect_cap=1s
    Start Fleet    ${fleet}
    Run Keyword And Expect Error    Fleet 'anonymous': 1 of 1 devices not running after 2 s*
    ...    Wait Until Fleet Is Running    ${fleet}    timeout=2s

A Receiver Logs In With A Secret Password
    [Documentation]    Connect To MQTT Broker takes the password as a Secret too; a wrong one fails to connect.
    Connect To MQTT Broker    ${SECURED}[host]    ${SECURED}[port]    alias=secured-receiver
    ...    username=${USERNAME}    password=${PASSWORD}
    Subscribe To Topic    iotix/acceptance-sensor/+/telemetry    qos=1    alias=secured-receiver
    ${fleet} =    Create Secured Fleet    observed    ${PASSWORD}
    Start Fleet    ${fleet}
    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=3    max_loss=0%    timeout=15s
    ...    source=secured-receiver
    Run Keyword And Expect Error    Cannot connect 'intruder' to MQTT broker ${SECURED}[host]:${SECURED}[port]: *
    ...    Connect To MQTT Broker    ${SECURED}[host]    ${SECURED}[port]    alias=intruder
    ...    username=${USERNAME}    password=${WRONG PASSWORD}    timeout=5s
    [Teardown]    Delete Fleets And Disconnect    secured-receiver

A Plain Text Password Is Refused By Robot
    [Documentation]    Only Secret values are accepted, so a password cannot be written into a suite by mistake;
    ...    the error does not echo the plain text.
    Plain Text Passwords Should Be Refused
    ${fleets} =    Get Fleets
    Should Be Empty    ${fleets}

The Password Does Not Appear In What The Keywords Return
    [Documentation]    Stats, device status and the CSV export never carry the password.
    ${fleet} =    Create Secured Fleet    returned    ${PASSWORD}
    Start Fleet    ${fleet}
    Wait Until Fleet Is Running    ${fleet}    timeout=10s
    ${stats} =    Get Fleet Stats    ${fleet}
    ${status} =    Get Device Status    returned-0
    Export Devices To CSV    ${fleet}    ${WORKDIR}/secured.csv
    ${csv} =    Get File    ${WORKDIR}/secured.csv
    Should Not Be True    $PASSWORD.value in repr($stats) + repr($status) + $csv


*** Keywords ***
Start Secrets Environment
    [Documentation]    The acceptance environment plus a broker that accepts only ${USERNAME} with ${PASSWORD};
    ...    sets ${SECURED} (host, port).
    Start Acceptance Environment
    ${secured} =    Start Password Protected Broker    ${USERNAME}    ${PASSWORD}
    VAR    ${SECURED}    ${secured}    scope=SUITE

Stop Secrets Environment
    [Documentation]    Stops the password-protected broker and cleans up the acceptance environment.
    Stop Password Protected Broker
    Stop Acceptance Environment

Create Secured Fleet
    [Documentation]    Creates fleet ${name} of two acceptance sensors (ids ${name}-{index}) that log in to the
    ...    password-protected broker as ${USERNAME} with ${password} (a Secret).
    [Arguments]    ${name}    ${password}
    ${fleet} =    Create Fleet    acceptance-sensor    count=2    name=${name}    id_pattern=${name}-{index}
    ...    host=${SECURED}[host]    port=${SECURED}[port]    username=${USERNAME}    password=${password}
    ...    reconnect_base=200ms    reconnect_cap=1s
    RETURN    ${fleet}

Plain Text Passwords Should Be Refused
    [Documentation]    Create Fleet and Connect To MQTT Broker refuse a plain-text password by Robot's argument
    ...    conversion (left out of ``robot --dryrun``, which converts arguments too and would count the refusal
    ...    as a failure).
    [Tags]    robot:no-dry-run
    Run Keyword And Expect Error    ValueError: Argument 'password' must have type 'Secret', got string.
    ...    Create Fleet    acceptance-sensor    name=plain    password=written-in-the-suite
    Run Keyword And Expect Error    ValueError: Argument 'password' must have type 'Secret', got string.
    ...    Create Fleets From Scenario    ${MODELS}/scenarios/home.yaml    password=written-in-the-suite
    Run Keyword And Expect Error    ValueError: Argument 'password' must have type 'Secret', got string.
    ...    Connect To MQTT Broker    ${SECURED}[host]    ${SECURED}[port]    alias=plain
    ...    username=${USERNAME}    password=written-in-the-suite
