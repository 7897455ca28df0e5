*** Settings ***
Documentation       Export Devices To CSV (one row per device, formula-like cells neutralised) and Import Devices
...                 From CSV (a fleet of named devices with per-device overrides), with their errors.
Resource            ../acceptance.resource
Library             Collections

Suite Setup         Start Acceptance Environment
Suite Teardown      Stop Acceptance Environment
Test Teardown       Delete All Fleets


*** Variables ***
@{EXPORT COLUMNS}       deviceId    fleet    model    index    state    messagesSent    messagesFailed
...                     messagesDropped    bytesSent    connects    disconnects    reconnects    lastError


*** Test Cases ***
Export Writes One Row Per Device
    [Documentation]    The header names the columns; each row has the device's state and counters.
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=3    name=export    id_pattern=export-{index}
    Wait Until Fleet Has Sent    ${fleet}    6
    ${path} =    Export Devices To CSV    ${fleet}    ${WORKDIR}/export/devices.csv
    Should Be Equal    ${path}    ${{ pathlib.Path($WORKDIR) / 'export' / 'devices.csv' }}
    ${rows} =    Read CSV Rows    ${path}
    Should Be Equal    ${{ list($rows[0]) }}    ${EXPORT COLUMNS}
    Length Should Be    ${rows}    3
    Values Should Include    row    ${rows}[2]    deviceId=export-2    fleet=export    model=acceptance-sensor
    ...    index=2    state=running    messagesFailed=0    lastError=${EMPTY}
    Should Be True    int(${rows}[2][messagesSent]) >= 2

Cells That Would Run As Spreadsheet Formulas Are Neutralised
    [Documentation]    Device ids starting with =, +, - or @ are written with a leading ' so a spreadsheet shows
    ...    them as text.
    FOR    ${name}    ${prefix}    IN    equals    \=    plus    +    minus    -    at    @
        Create Local Fleet    acceptance-sensor    name=${name}    id_pattern=${prefix}cmd{index}
        Export Devices To CSV    ${name}    ${WORKDIR}/${name}.csv
        ${rows} =    Read CSV Rows    ${WORKDIR}/${name}.csv
        Should Be Equal    ${rows}[0][deviceId]    '${prefix}cmd0
    END
    ${ids} =    Get Devices    equals
    Should Be Equal    ${ids}    ${{ ['=cmd0'] }}

An Export Can Be Imported Again
    [Documentation]    The exported file has deviceId and model columns: importing it recreates the same devices
    ...    (the counter columns are not telemetry fields and are ignored).
    ${fleet} =    Create Local Fleet    acceptance-sensor    count=3    name=round-trip    id_pattern=trip-{index}
    Export Devices To CSV    ${fleet}    ${WORKDIR}/round-trip.csv
    Delete Fleet    ${fleet}
    ${imported} =    Import Devices From CSV    ${WORKDIR}/round-trip.csv    name=round-trip
    ...    host=${BROKER}[host]    port=${BROKER}[port]
    ${devices} =    Get Devices    ${imported}
    Should Be Equal    ${devices}    ${{ ['trip-0', 'trip-1', 'trip-2'] }}
    Fleet Stats Should Include    ${imported}    model=acceptance-sensor    target=mqtt://${BROKER}[host]:${BROKER}[port]

Import Sets Per Device Overrides From Telemetry Columns
    [Documentation]    A column named like a telemetry field overrides that field for the row's device (an empty
    ...    cell means no override); the model comes from the model column.
    Create File    ${WORKDIR}/import.csv
    ...    deviceId,model,level,counter\nhall-a,acceptance-sensor,55.5,\nhall-b,acceptance-sensor,,7\n
    Open Receiver    hall    iotix/acceptance-sensor/hall-a/telemetry    iotix/acceptance-sensor/hall-b/telemetry
    ${fleet} =    Import Devices From CSV    ${WORKDIR}/import.csv    name=hall
    ...    host=${BROKER}[host]    port=${BROKER}[port]
    Start Fleet    ${fleet}
    Wait Until Fleet Is Running    ${fleet}
    ${a} =    Readings Of    hall    hall-a    3
    ${b} =    Readings Of    hall    hall-b    3
    Should Be Equal    ${{ {r['level'] for r in $a} }}    ${{ {55.5} }}
    Should Be Equal    ${{ [r['counter'] for r in $a] }}    ${{ [0, 1, 2] }}
    Should Be Equal    ${{ {r['counter'] for r in $b} }}    ${{ {7} }}
    [Teardown]    Delete Fleets And Disconnect    hall

The Model Argument Wins Over A Missing Model Column
    [Documentation]    Without a model column, model= says which model the devices are; the fleet name defaults
    ...    to the model id.
    Create File    ${WORKDIR}/no-model.csv    deviceId\nlobby-1\nlobby-2\n
    ${fleet} =    Import Devices From CSV    ${WORKDIR}/no-model.csv    model=thermostat
    Should Be Equal    ${fleet}    thermostat
    ${devices} =    Get Devices    ${fleet}
    Should Be Equal    ${devices}    ${{ ['lobby-1', 'lobby-2'] }}

Import Errors Name The File And What Is Wrong
    [Documentation]    Missing file, missing deviceId column, empty ids, no or several models.
    Run Keyword And Expect Error    Device CSV '*missing.csv' does not exist.
    ...    Import Devices From CSV    ${WORKDIR}/missing.csv    model=thermostat
    Import Should Fail    id,model\nx,thermostat\n
    ...    Device CSV '*bad.csv' needs a 'deviceId' column; it has: id, model.
    Import Should Fail    deviceId,model\nx,thermostat\n,thermostat\n
    ...    Device CSV '*bad.csv': empty deviceId on line(s) 3.
    Import Should Fail    deviceId\nx\n
    ...    Device CSV '*bad.csv': give model= or a 'model' column naming one model (found: none).
    Import Should Fail    deviceId,model\nx,thermostat\ny,door-lock\n
    ...    Device CSV '*bad.csv': give model= or a 'model' column naming one model (found: door-lock, thermostat).
    Import Should Fail    deviceId,model\nx,no-such-model\n
    ...    No device model with id 'no-such-model'*

A Failed Import Leaves No Fleet Behind
    [Documentation]    A value that does not convert names the line, device and column; duplicate ids are
    ...    refused; either way no fleet is created.
    Import Should Fail    deviceId,model,counter\nok-1,acceptance-sensor,1\nbad-1,acceptance-sensor,many\n
    ...    Device CSV '*bad.csv', line 3, device 'bad-1', column 'counter': *
    Import Should Fail    deviceId,model\ntwin,acceptance-sensor\ntwin,acceptance-sensor\n
    ...    Device CSV '*bad.csv': Fleet 'acceptance-sensor': device ids must be unique; repeated: twin
    ${fleets} =    Get Fleets
    Should Be Empty    ${fleets}
    Run Keyword And Expect Error    No fleet named 'nope'*    Export Devices To CSV    nope    ${WORKDIR}/nope.csv


*** Keywords ***
Read CSV Rows
    [Documentation]    Returns the rows of CSV file ${path} as dictionaries keyed by the header's names.
    [Arguments]    ${path}
    ${text} =    Get File    ${path}
    ${rows} =    Evaluate    [dict(r) for r in csv.DictReader(io.StringIO($text))]    modules=csv,io
    RETURN    ${rows}

Import Should Fail
    [Documentation]    Writes ${content} to a CSV file and checks that importing it fails with ${error} (a glob).
    [Arguments]    ${content}    ${error}
    Create File    ${WORKDIR}/bad.csv    ${content}
    Run Keyword And Expect Error    ${error}
    ...    Import Devices From CSV    ${WORKDIR}/bad.csv    host=${BROKER}[host]    port=${BROKER}[port]

Readings Of
    [Documentation]    The first ${count} telemetry readings of ${device_id} at receiver ${alias}, as dictionaries.
    [Arguments]    ${alias}    ${device_id}    ${count}
    ${messages} =    Wait Until Messages Received    iotix/acceptance-sensor/${device_id}/telemetry
    ...    count=${count}    alias=${alias}
    ${readings} =    Evaluate    [json.loads(m['payload']) for m in $messages[:${count}]]    modules=json
    RETURN    ${readings}
