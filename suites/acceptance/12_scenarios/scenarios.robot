*** Settings ***
Documentation       Create Fleets From Scenario: IoTFlow's site presets (models/scenarios) against the local broker,
...                 models named by id or by file, what wins of the connection settings, and the errors of
...                 broken scenarios (file, entry, what was expected), which leave no fleet behind and leave the
...                 fleets that were already running alone.
Resource            ../acceptance.resource
Library             Collections
Library             String

Suite Setup         Start Acceptance Environment
Suite Teardown      Stop Acceptance Environment
Test Teardown       Delete All Fleets


*** Variables ***
${SCENARIOS}            ${MODELS}/scenarios
@{HOME FLEETS}          home-temperature-sensors    home-door-locks    home-cameras    home-air-quality-monitors
...                     home-thermostats
# IoTFlow's home preset: fleet -> model and device count (3 + 2 + 2 + 1 + 1 = 9 devices).
&{HOME MODELS}          home-temperature-sensors=temperature-sensor    home-door-locks=door-lock
...                     home-cameras=camera    home-air-quality-monitors=air-quality-monitor
...                     home-thermostats=thermostat
&{HOME COUNTS}          home-temperature-sensors=3    home-door-locks=2    home-cameras=2
...                     home-air-quality-monitors=1    home-thermostats=1
# Four problems in one file: a count of 0, an unknown key, a password in the file and a missing model file.
${BROKEN SCENARIO}      SEPARATOR=\n
...                     name: broken
...                     fleets:
...                     ${SPACE * 2}- {model: thermostat, count: 2}
...                     ${SPACE * 2}- {model: camera, count: 0}
...                     ${SPACE * 2}- {model: door-lock, count: 1, idpattern: "lock-{n}"}
...                     ${SPACE * 2}- {model: thermostat, count: 1, name: hall, connection: {password: hunter2}}
...                     ${SPACE * 2}- {model: ./no-such-model.yaml, count: 1}
...                     ${EMPTY}
# A lab: one model by id, one by a file next to the scenario; the scenario's host and port cannot work.
${LAB SCENARIO}         SEPARATOR=\n
...                     name: lab
...                     seed: 3
...                     connection: {host: no-such-host.invalid, port: 1}
...                     fleets:
...                     ${SPACE * 2}- {model: acceptance-sensor, count: 2, idPattern: "lab-{index}"}
...                     ${SPACE * 2}- model: ../models/lab-thermostat.yaml
...                     ${SPACE * 4}count: 1
...                     ${SPACE * 4}name: lab-hvac
...                     ${SPACE * 4}connection: {qos: 1}
...                     ${EMPTY}
# Valid as a file, but its second entry names a model that is not loaded.
${UNKNOWN MODEL}        SEPARATOR=\n
...                     fleets:
...                     ${SPACE * 2}- {model: thermostat, count: 1, name: lobby}
...                     ${SPACE * 2}- {model: thermostatt, count: 1, name: attic}
...                     ${EMPTY}


*** Test Cases ***
The Home Preset Creates Nine Devices Of IoTFlow's Mix
    [Documentation]    Five fleets in file order: 3 temperature sensors, 2 door locks, 2 cameras, 1 air quality
    ...    monitor and 1 thermostat, each of the shipped model, all sending to the local broker.
    ${fleets} =    Create Fleets From Scenario    ${SCENARIOS}/home.yaml    host=${BROKER}[host]
    ...    port=${BROKER}[port]
    Should Be Equal    ${fleets}    ${HOME FLEETS}
    ${devices} =    Home Fleets Should Have IoTFlow's Mix    @{fleets}
    Should Be Equal As Integers    ${devices}    9
    ${cameras} =    Get Devices    home-cameras
    Should Be Equal    ${cameras}    ${{ ['home-camera-01', 'home-camera-02'] }}
    Start Fleets And Check Their Telemetry    @{fleets}

The Same Site Twice Under Another Name
    [Documentation]    name= replaces {scenario} in fleet names and device ids; the first site is not touched.
    Create Fleets From Scenario    ${SCENARIOS}/home.yaml    host=${BROKER}[host]    port=${BROKER}[port]
    ${second} =    Create Fleets From Scenario    ${SCENARIOS}/home.yaml    name=home-2    host=${BROKER}[host]
    ...    port=${BROKER}[port]
    Should Be Equal    ${second}[0]    home-2-temperature-sensors
    ${ids} =    Get Devices    home-2-thermostats
    Should Be Equal    ${ids}    ${{ ['home-2-thermostat-01'] }}
    ${all} =    Get Fleets
    Length Should Be    ${all}    10

Models Are Named By Id Or By File And The Keyword's Settings Win
    [Documentation]    A model id is looked up among the loaded models, a file relative to the scenario is loaded;
    ...    the keyword's host and port replace the scenario's (which name no server).
    Create File    ${WORKDIR}/sites/lab.yaml    ${LAB SCENARIO}
    ${thermostat} =    Get File    ${MODELS}/thermostat.yaml
    ${lab thermostat} =    Replace String    ${thermostat}    id: thermostat    id: lab-thermostat
    Create File    ${WORKDIR}/models/lab-thermostat.yaml    ${lab thermostat}
    ${fleets} =    Create Fleets From Scenario    ${WORKDIR}/sites/lab.yaml    host=${BROKER}[host]
    ...    port=${BROKER}[port]    seed=42
    Should Be Equal    ${fleets}    ${{ ['lab-acceptance-sensor', 'lab-hvac'] }}
    Fleet Stats Should Include    lab-hvac    model=lab-thermostat    target=mqtt://${BROKER}[host]:${BROKER}[port]
    Start Fleets And Check Their Telemetry    @{fleets}

A Broken Scenario Names The File, Each Entry And What Was Expected
    [Documentation]    Every problem of the file at once; the password in the file is refused and not shown;
    ...    nothing is created.
    Create File    ${WORKDIR}/broken.yaml    ${BROKEN SCENARIO}
    ${message} =    Run Keyword And Expect Error
    ...    STARTS:Scenario '${WORKDIR}/broken.yaml' is invalid (4 problems):
    ...    Create Fleets From Scenario    ${WORKDIR}/broken.yaml    host=${BROKER}[host]    port=${BROKER}[port]
    ${problems} =    Split To Lines    ${message}    1
    Should Be Equal    ${problems}[0]    ${SPACE * 2}- fleets[1].count: must be >= 1, got 0
    Should Start With    ${problems}[1]
    ...    ${SPACE * 2}- fleets[2].idpattern: unknown key 'idpattern' (did you mean 'idPattern'?
    Should Start With    ${problems}[2]
    ...    ${SPACE * 2}- fleets[3].connection.password: a password is never written in a scenario file
    Should Start With    ${problems}[3]
    ...    ${SPACE * 2}- fleets[4].model: model file '${WORKDIR}/no-such-model.yaml' not found
    Should Not Contain    ${message}    hunter2
    ${fleets} =    Get Fleets
    Should Be Empty    ${fleets}

An Unknown Model Id Fails Before Any Fleet Is Created
    [Documentation]    The first entry is fine, the second names a model that is not loaded: no fleet at all.
    Create File    ${WORKDIR}/unknown.yaml    ${UNKNOWN MODEL}
    ${message} =    Run Keyword And Expect Error
    ...    STARTS:Scenario '${WORKDIR}/unknown.yaml' is invalid (1 problem):
    ...    Create Fleets From Scenario    ${WORKDIR}/unknown.yaml    host=${BROKER}[host]    port=${BROKER}[port]
    ${problems} =    Split To Lines    ${message}    1
    Should Start With    ${problems}[0]    ${SPACE * 2}- fleets[1].model: No device model with id 'thermostatt'
    Should End With    ${problems}[0]    ; load it first (Load Device Models) or give the path of a model file
    ${fleets} =    Get Fleets
    Should Be Empty    ${fleets}

A Fleet That Cannot Be Created Removes The Scenario's Fleets And Leaves Running Ones Alone
    [Documentation]    A running fleet already has the id of the home's first camera: the home's two fleets
    ...    created before the cameras are removed again, the error names the entry, and the running fleet goes on.
    ${neighbour} =    Start Local Fleet    camera    name=neighbour    id_pattern=home-camera-{n:02d}
    ${expected} =    Catenate    EQUALS:Scenario '${SCENARIOS}/home.yaml': fleets[2] (fleet 'home-cameras',
    ...    2 x camera) could not be created: Fleet 'home-cameras': device id 'home-camera-01' is already used by
    ...    fleet 'neighbour'; use another id_pattern. The 2 fleet(s) it created before were removed again
    ...    (home-temperature-sensors, home-door-locks). Fleets that existed before are untouched.
    Run Keyword And Expect Error    ${expected}
    ...    Create Fleets From Scenario    ${SCENARIOS}/home.yaml    host=${BROKER}[host]    port=${BROKER}[port]
    ${fleets} =    Get Fleets
    Should Be Equal    ${fleets}    ${{ ['neighbour'] }}
    Devices In State Should Be    ${neighbour}    running    1
    ${before} =    Get Fleet Stats    ${neighbour}
    Wait Until Fleet Has Sent    ${neighbour}    ${{ ${before}[messagesSent] + 1 }}    timeout=10s

Arguments That Cannot Work Fail Before The File Is Read
    [Documentation]    The keyword's own values are checked first and named; a missing file is named.
    Run Keyword And Expect Error    Create Fleets From Scenario: qos must be 0, 1 or 2, got 3.
    ...    Create Fleets From Scenario    ${SCENARIOS}/home.yaml    qos=3
    Run Keyword And Expect Error
    ...    Create Fleets From Scenario: scenario name 'my home' is not usable: letters, digits, '.', '_' or '-'*
    ...    Create Fleets From Scenario    ${SCENARIOS}/home.yaml    name=my home
    Run Keyword And Expect Error    Scenario '${WORKDIR}/nowhere.yaml' is invalid (1 problem):*file not found
    ...    Create Fleets From Scenario    ${WORKDIR}/nowhere.yaml
    ${fleets} =    Get Fleets
    Should Be Empty    ${fleets}


*** Keywords ***
Home Fleets Should Have IoTFlow's Mix
    [Documentation]    Checks the model, device count, state and target of each of the home's fleets; returns
    ...    how many devices they have together.
    [Arguments]    @{fleets}
    VAR    ${devices}    ${0}
    FOR    ${fleet}    IN    @{fleets}
        ${stats} =    Fleet Stats Should Include    ${fleet}    model=${HOME MODELS}[${fleet}]
        ...    deviceCount=${HOME COUNTS}[${fleet}]    state=created    protocol=mqtt
        ...    target=mqtt://${BROKER}[host]:${BROKER}[port]
        ${devices} =    Evaluate    ${devices} + ${stats}[deviceCount]
    END
    RETURN    ${devices}

Start Fleets And Check Their Telemetry
    [Documentation]    Starts every fleet, waits until each runs and checks that the suite's receiver got
    ...    at least one reading of each device, with nothing lost.
    [Arguments]    @{fleets}
    FOR    ${fleet}    IN    @{fleets}
        Start Fleet    ${fleet}
    END
    FOR    ${fleet}    IN    @{fleets}
        Wait Until Fleet Is Running    ${fleet}    timeout=20s
        Telemetry Should Be Received From Fleet    ${fleet}    min_messages=1    max_loss=0%
    END
