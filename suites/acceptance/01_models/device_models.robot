*** Settings ***
Documentation       Load Device Models: the shipped folder, single JSON and YAML files, and the errors of broken
...                 files (file, JSON path, what was expected), missing paths, duplicate and unknown model ids.
Resource            ../acceptance.resource
Library             Collections
Library             String

Suite Setup         Create Work Directory
Suite Teardown      Stop Acceptance Environment
Test Teardown       Delete All Fleets


*** Variables ***
@{SHIPPED}          air-quality-monitor    camera    cellular-asset-tracker    coap-smart-plug    coap-soil-sensor
...                 door-lock    ecg-monitor-v1
...                 ecg-monitor-plus    environmental-sensor-v1    environmental-sensor-plus    gps-tracker
...                 industrial-gateway-v1    industrial-gateway-plus    iotflow-hybrid-sensor
...                 iotflow-smart-sensor    iotflow-smart-sensor-energy-efficient    iotflow-smart-sensor-high-frequency
...                 iotflow-smart-sensor-industrial    kafka-vehicle-telemetry    replay-sensor-v1    replay-sensor-plus
...                 secure-env-sensor    simple-temperature    simple-temperature-plus    smart-meter
...                 smart-sensor-default    smart-sensor-energy-efficient    smart-sensor-high-frequency
...                 smart-sensor-industrial    temperature-sensor    thermostat
# Four problems: a number where a string is expected, a QoS out of range, an unknown template variable and a
# generator whose max is below its min.
${BROKEN MODEL}     SEPARATOR=\n
...                 id: broken-sensor
...                 name: Broken sensor
...                 version: 1.0
...                 type: sensor
...                 protocol: mqtt
...                 connection:
...                 ${SPACE * 2}host: localhost
...                 ${SPACE * 2}topicPattern: "iotix/\${deviceId}/\${nope}"
...                 ${SPACE * 2}qos: 3
...                 telemetry:
...                 ${SPACE * 2}- name: temperature
...                 ${SPACE * 4}type: number
...                 ${SPACE * 4}intervalMs: 500
...                 ${SPACE * 4}generator: {type: random, min: 10, max: 5}
...                 ${EMPTY}
# An HTTP model without its URL and a CoAP model with a mode that does not exist.
${HTTP WITHOUT URL}    SEPARATOR=\n
...                 id: no-url-sensor
...                 name: HTTP sensor without a URL
...                 version: 1.0.0
...                 type: sensor
...                 protocol: http
...                 connection:
...                 ${SPACE * 2}flow: iotflow
...                 telemetry:
...                 ${SPACE * 2}- name: temperature
...                 ${SPACE * 4}type: number
...                 ${SPACE * 4}intervalMs: 500
...                 ${SPACE * 4}generator: {type: random, min: 0, max: 5}
...                 ${EMPTY}


*** Test Cases ***
The Shipped Models Folder Loads Every Model
    [Documentation]    A folder is searched recursively (schema/ and data/ skipped); every model id is returned.
    ${ids} =    Load Device Models    ${MODELS}
    Lists Should Be Equal    ${ids}    ${SHIPPED}    ignore_order=True

Loading The Same Folder Again Is Harmless
    [Documentation]    Models already loaded from the same files stay loaded; reloading is not a duplicate.
    ${first} =    Load Device Models    ${MODELS}
    ${again} =    Load Device Models    ${MODELS}
    Lists Should Be Equal    ${first}    ${again}

A Single JSON File Loads One Model
    [Documentation]    A path to one .json file loads that model only.
    ${ids} =    Load Device Models    ${MODELS}/simple-temperature.json
    Should Be Equal    ${ids}    ${{ ['simple-temperature'] }}

A Single YAML File Loads One Model
    [Documentation]    A path to one .yaml file loads that model only.
    ${ids} =    Load Device Models    ${MODELS}/ecg-monitor-v1.yaml
    Should Be Equal    ${ids}    ${{ ['ecg-monitor-v1'] }}

A Loaded Model Can Be Used By Its Id
    [Documentation]    After loading, Create Fleet takes the model id.
    ${ids} =    Load Device Models    ${ACCEPTANCE MODELS}
    List Should Contain Value    ${ids}    acceptance-sensor
    ${fleet} =    Create Fleet    acceptance-sensor    count=2    name=by-id
    Should Be Equal    ${fleet}    by-id
    ${devices} =    Get Devices    ${fleet}
    Should Be Equal    ${devices}    ${{ ['by-id-0', 'by-id-1'] }}

A Fleet Can Be Created From A Model File Path
    [Documentation]    Create Fleet accepts a path to a model file instead of a loaded id; the model is loaded.
    ${fleet} =    Create Fleet    ${MODELS}/door-lock.json    count=1    name=from-path
    ${stats} =    Get Fleet Stats    ${fleet}
    Should Be Equal    ${stats}[model]    door-lock

A Broken Model File Fails With The File And Every Problem
    [Documentation]    Every problem of the file is listed at once, each with its JSON path and what was expected.
    Create File    ${WORKDIR}/broken/broken-sensor.yaml    ${BROKEN MODEL}
    ${error} =    Run Keyword And Expect Error    Device model '*broken-sensor.yaml' is invalid (4 problems):*
    ...    Load Device Models    ${WORKDIR}/broken/broken-sensor.yaml
    Should Contain    ${error}    - connection.qos: expected one of: 0, 1, 2; got 3
    Should Contain    ${error}    - version: expected a string, got number 1.0
    Should Contain    ${error}    - connection.topicPattern: unknown variable 'nope'
    Should Contain    ${error}    - telemetry[0].generator.max: must be >= min (10), got 5

The Connection Block Is Checked Per Protocol
    [Documentation]    An http model needs connection.url; a CoAP model's mode is client or server.
    Create File    ${WORKDIR}/protocols/no-url.yaml    ${HTTP WITHOUT URL}
    Run Keyword And Expect Error
    ...    Device model '*no-url.yaml' is invalid (1 problem):*connection.url: required for protocol 'http'*
    ...    Load Device Models    ${WORKDIR}/protocols/no-url.yaml
    ${coap} =    Get File    ${MODELS}/coap-soil-sensor.yaml
    ${coap} =    Replace String    ${coap}    mode: client    mode: satellite
    ${coap} =    Replace String    ${coap}    id: coap-soil-sensor    id: satellite-sensor
    Create File    ${WORKDIR}/protocols-coap/satellite.yaml    ${coap}
    Run Keyword And Expect Error
    ...    Device model '*satellite.yaml' is invalid (1 problem):*connection.mode: expected one of: client, server;*
    ...    Load Device Models    ${WORKDIR}/protocols-coap/satellite.yaml

A YAML Syntax Error Gives Its Line And Column
    [Documentation]    A file that is not YAML is reported at (root) with the position of the error.
    Create File    ${WORKDIR}/syntax/unclosed.yaml    id: unclosed\nname: [unclosed\n
    Run Keyword And Expect Error
    ...    Device model '*unclosed.yaml' is invalid (1 problem):*(root): YAML syntax error at line 3, column 1:*
    ...    Load Device Models    ${WORKDIR}/syntax/unclosed.yaml

A JSON Syntax Error Gives Its Line And Column
    [Documentation]    A file that is not JSON is reported at (root) with the position of the error.
    Create File    ${WORKDIR}/syntax-json/trailing-comma.json    {\n"id": "x",\n}\n
    Run Keyword And Expect Error
    ...    Device model '*trailing-comma.json' is invalid (1 problem):*(root): JSON syntax error at line 3, column 1:*
    ...    Load Device Models    ${WORKDIR}/syntax-json/trailing-comma.json

Several Broken Files In A Folder Are Reported Together
    [Documentation]    One failure lists every broken file of the folder with its problems.
    Create File    ${WORKDIR}/several/one.yaml    ${BROKEN MODEL}
    Create File    ${WORKDIR}/several/two.yaml    id: two\nname: [unclosed\n
    ${error} =    Run Keyword And Expect Error
    ...    2 device model files in '*several' are invalid (5 problems in total):*
    ...    Load Device Models    ${WORKDIR}/several
    Should Match    ${error}    *Device model '*one.yaml' is invalid (4 problems)*
    Should Match    ${error}    *Device model '*two.yaml' is invalid (1 problem)*

A Folder With One Broken File Loads Nothing
    [Documentation]    Loading is all or nothing: the valid model of the folder is not registered either.
    Create File    ${WORKDIR}/mixed/broken.yaml    ${BROKEN MODEL}
    ${valid} =    Get File    ${ACCEPTANCE MODELS}/acceptance-sensor.yaml
    ${valid} =    Replace String    ${valid}    id: acceptance-sensor    id: mixed-valid-sensor
    Create File    ${WORKDIR}/mixed/valid.yaml    ${valid}
    Run Keyword And Expect Error    Device model '*broken.yaml' is invalid*    Load Device Models    ${WORKDIR}/mixed
    Run Keyword And Expect Error    No device model with id 'mixed-valid-sensor'*
    ...    Create Fleet    mixed-valid-sensor

A Model Id Defined In Two Files Is Refused
    [Documentation]    A second file with an id that is already loaded from another file names both files.
    Load Device Models    ${MODELS}
    Copy File    ${MODELS}/simple-temperature.json    ${WORKDIR}/duplicate/copy.json
    Run Keyword And Expect Error
    ...    Device model '*copy.json' is invalid (1 problem):*id: duplicate model id 'simple-temperature': *
    ...    Load Device Models    ${WORKDIR}/duplicate/copy.json
    ${error} =    Run Keyword And Expect Error    *    Load Device Models    ${WORKDIR}/duplicate/copy.json
    Should Match    ${error}    *already defined in '*models/simple-temperature.json'

A Missing Path Is Reported
    [Documentation]    A path that does not exist fails with the path.
    Run Keyword And Expect Error    Device model '*no-such-models' is invalid (1 problem):*no such file or folder
    ...    Load Device Models    ${WORKDIR}/no-such-models

A Folder Without Model Files Is Reported
    [Documentation]    A folder with no .json/.yaml/.yml file is an error, not an empty list.
    Create Directory    ${WORKDIR}/empty
    Create File    ${WORKDIR}/empty/readme.txt    not a model
    Run Keyword And Expect Error
    ...    Device model '*empty' is invalid (1 problem):*no model files (*.json, *.yaml, *.yml) in this folder
    ...    Load Device Models    ${WORKDIR}/empty

An Unknown Model Id Is Refused With The Known Ids
    [Documentation]    Create Fleet with an id that was never loaded lists the ids that were.
    Load Device Models    ${MODELS}
    Run Keyword And Expect Error    No device model with id 'no-such-model' (known: *simple-temperature*)
    ...    Create Fleet    no-such-model    count=1
