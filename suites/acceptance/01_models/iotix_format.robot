*** Settings ***
Documentation       Models written for iotix load and run as written: the shipped models under the iotix README's
...                 ids, a model of that format (no version, connection.broker, trigger: {type: condition},
...                 an exponential with min/max only, the ECG settings), replay files under a data root
...                 (data_dir= of Load Device Models, IOTIX_DATA_PATH) and Load Device Models without a path
...                 (DEVICE_MODEL_PATH).
Resource            ../acceptance.resource
Library             Collections
Library             String

Suite Setup         Start Acceptance Environment
Suite Teardown      Stop Acceptance Environment
Test Teardown       Clean Up Test


*** Variables ***
# A ward monitor as a QA engineer writes it from the iotix README. ${DATA_FILE} is filled in per test.
${WARD MODEL}       SEPARATOR=\n
...                 id: ward-monitor
...                 name: Ward monitor
...                 type: sensor
...                 protocol: mqtt
...                 connection:
...                 ${SPACE * 2}broker: ward-broker
...                 ${SPACE * 2}port: 1883
...                 ${SPACE * 2}topicPattern: "ward/\${deviceId}/vitals"
...                 ${SPACE * 2}qos: 1
...                 telemetry:
...                 ${SPACE * 2}- name: spo2
...                 ${SPACE * 4}type: integer
...                 ${SPACE * 4}generator: {type: random, distribution: normal, mean: 97, stddev: 1.5}
...                 ${SPACE * 4}intervalMs: 300
...                 ${SPACE * 2}- name: alarms
...                 ${SPACE * 4}type: integer
...                 ${SPACE * 4}generator: {type: random, min: 0, max: 20, distribution: exponential}
...                 ${SPACE * 4}intervalMs: 300
...                 ${SPACE * 2}- name: bedTemperature
...                 ${SPACE * 4}type: number
...                 ${SPACE * 4}generator: {type: replay, dataFile: "DATA_FILE", column: celsius, loop: true}
...                 ${SPACE * 4}intervalMs: 300
...                 behaviors:
...                 ${SPACE * 2}- name: desaturation
...                 ${SPACE * 4}trigger: {type: condition, condition: "spo2 < 90"}
...                 ${SPACE * 4}action: {type: publish, topic: "ward/\${deviceId}/alerts", payload: {spo2: "\${spo2}"}}
...                 ${EMPTY}


*** Test Cases ***
The Shipped Models Under The README Ids Run As The README Says
    [Documentation]    simple-temperature is the README's: uniform 20..30 on devices/<id>/telemetry; the ECG monitor
    ...    sends 200 samples x 16 bit = 400 bytes on devices/<id>/ecg.
    Open Receiver    readme    devices/#
    Start Local Fleet    simple-temperature    count=3    name=readme-temp    id_pattern=readme-temp-{index}
    Start Local Fleet    ecg-monitor-v1    name=readme-ecg    id_pattern=readme-ecg-{index}
    ${temps} =    Wait Until Messages Received    devices/+/telemetry    count=3    timeout=10s    alias=readme
    FOR    ${message}    IN    @{temps}
        ${payload} =    Evaluate    json.loads($message['payload'])    modules=json
        Should Be True    20 <= ${payload}[temperature] <= 30
        Should Be Equal    ${message}[topic]    devices/${payload}[deviceId]/telemetry
    END
    ECG Samples Should Be 400 Bytes    devices/readme-ecg-0/ecg    alias=readme

A Replay File Outside The Model's Folder Needs A Data Root
    [Documentation]    An absolute dataFile outside every data root loads (with a warning) and Create Fleet refuses
    ...    it, saying how to allow it; with data_dir= the same file loads again and its fleet replays the file.
    ${data_dir} =    Write Ward Data
    Create File    ${WORKDIR}/ward/ward-monitor.yaml
    ...    ${{ $WARD_MODEL.replace('DATA_FILE', $data_dir + '/beds.csv') }}
    ${ids} =    Load Device Models    ${WORKDIR}/ward/ward-monitor.yaml
    Should Be Equal    ${ids}    ${{ ['ward-monitor'] }}
    Create Fleet Should Ask For A Data Root    ward-monitor    ${data_dir}/beds.csv
    Load Device Models    ${WORKDIR}/ward/ward-monitor.yaml    data_dir=${data_dir}
    Open Receiver    ward    ward/+/vitals
    Start Local Fleet    ward-monitor    name=ward    id_pattern=bed-{index}
    ${temperatures} =    Wait Until Replayed    ward/bed-0/vitals    bedTemperature    count=3    alias=ward
    Should Be Equal    ${temperatures}    ${{ [36.5, 36.7, 37.9] }}

A Data Root Can Come From IOTIX_DATA_PATH
    [Documentation]    The folders of IOTIX_DATA_PATH are data roots too, also when set after the model was loaded.
    ${data_dir} =    Write Ward Data
    ${model} =    Replace String    ${WARD MODEL}    DATA_FILE    ${data_dir}/beds.csv
    ${model} =    Replace String    ${model}    id: ward-monitor    id: ward-monitor-env
    Create File    ${WORKDIR}/ward-env/ward-monitor-env.yaml    ${model}
    Load Device Models    ${WORKDIR}/ward-env/ward-monitor-env.yaml
    Set Environment Variable    IOTIX_DATA_PATH    ${data_dir}
    ${fleet} =    Create Local Fleet    ward-monitor-env    name=ward-env    id_pattern=bed-env-{index}
    Should Be Equal    ${fleet}    ward-env

A Data Dir That Is No Folder Is Refused
    [Documentation]    data_dir= must name an existing folder.
    Run Keyword And Expect Error
    ...    Load Device Models: data_dir '${WORKDIR}/no-such-data' is not a folder*
    ...    Load Device Models    ${ACCEPTANCE MODELS}    data_dir=${WORKDIR}/no-such-data

Without A Path Load Device Models Reads DEVICE_MODEL_PATH
    [Documentation]    The iotix convention: DEVICE_MODEL_PATH names the models folder; a missing one is named.
    ${model} =    Replace String    ${WARD MODEL}    DATA_FILE    beds.csv
    ${model} =    Replace String    ${model}    id: ward-monitor    id: ward-monitor-default
    Create File    ${WORKDIR}/default-models/ward-monitor-default.yaml    ${model}
    Create File    ${WORKDIR}/default-models/beds.csv    celsius\n36.5\n
    Set Environment Variable    DEVICE_MODEL_PATH    ${WORKDIR}/default-models
    ${ids} =    Load Device Models
    Should Be Equal    ${ids}    ${{ ['ward-monitor-default'] }}
    Set Environment Variable    DEVICE_MODEL_PATH    ${WORKDIR}/no-such-models
    Run Keyword And Expect Error
    ...    Device model '*no-such-models' is invalid (1 problem):*no such file or folder (named by DEVICE_MODEL_PATH*
    ...    Load Device Models

A YAML Alias Bomb Is Refused
    [Documentation]    Nine levels of nine aliases under metadata would expand to almost a billion values.
    VAR    ${bomb}    metadata:\n${SPACE}l0: &l0 [lol]\n
    FOR    ${level}    IN RANGE    1    10
        ${aliases} =    Evaluate    ', '.join(['*l${{${level} - 1}}'] * 9)
        VAR    ${bomb}    ${bomb}${SPACE}l${level}: &l${level} [${aliases}]\n
    END
    ${model} =    Replace String    ${WARD MODEL}    DATA_FILE    beds.csv
    Create File    ${WORKDIR}/bomb/bomb.yaml    ${model}${bomb}
    Run Keyword And Expect Error
    ...    Device model '*bomb.yaml' is invalid (1 problem):*YAML aliases (*name) would add *at most 10,000*
    ...    Load Device Models    ${WORKDIR}/bomb/bomb.yaml


*** Keywords ***
Write Ward Data
    [Documentation]    Writes beds.csv (celsius 36.5, 36.7, 37.9) into a data folder outside every model folder
    ...    and returns that folder.
    VAR    ${data_dir}    ${WORKDIR}/mounted/historical
    Create File    ${data_dir}/beds.csv    ts,celsius\n1,36.5\n2,36.7\n3,37.9\n
    RETURN    ${data_dir}

ECG Samples Should Be 400 Bytes
    [Documentation]    Waits for 3 messages on ${topic} and checks that each ecgSamples field holds 200 samples of
    ...    16 bit (400 bytes, base64 in the JSON envelope).
    [Arguments]    ${topic}    ${alias}
    ${readings} =    Wait Until Messages Received    ${topic}    count=3    timeout=10s    alias=${alias}
    ${payloads} =    Evaluate    [json.loads(m['payload']) for m in $readings]    modules=json
    ${sizes} =    Evaluate    {len(base64.b64decode(p['ecgSamples'])) for p in $payloads if 'ecgSamples' in p}
    ...    modules=base64
    Should Be Equal    ${sizes}    ${{ {400} }}

Wait Until Replayed
    [Documentation]    Waits for ${count} messages on ${topic}; returns the first ${count} values of ${field}.
    [Arguments]    ${topic}    ${field}    ${count}    ${alias}
    ${messages} =    Wait Until Messages Received    ${topic}    count=${count}    timeout=10s    alias=${alias}
    ${values} =    Evaluate    [json.loads(m['payload'])['${field}'] for m in $messages][:${count}]    modules=json
    RETURN    ${values}

Create Fleet Should Ask For A Data Root
    [Documentation]    Create Fleet of ${model} fails naming the field and ${data_file}, and says how to allow it.
    [Arguments]    ${model}    ${data_file}
    ${error} =    Run Keyword And Expect Error    *    Create Local Fleet    ${model}    name=no-root
    Should Match    ${error}    *telemetry field 'bedTemperature'*'${data_file}' is outside the model's folder*
    Should Contain    ${error}    add the folder to IOTIX_DATA_PATH
    Should Contain    ${error}    pass it as data_dir= to Load Device Models

Clean Up Test
    [Documentation]    Deletes the fleets, disconnects the test's receivers and forgets the environment variables
    ...    a test set.
    Delete All Fleets
    Remove Environment Variable    IOTIX_DATA_PATH    DEVICE_MODEL_PATH
    Run Keyword And Ignore Error    Disconnect From MQTT Broker    readme
    Run Keyword And Ignore Error    Disconnect From MQTT Broker    ward
