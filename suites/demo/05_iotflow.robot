*** Settings ***
Documentation       IoTFlow: a home, an office and a factory of smart sensors follow the IoTFlow device flow
...                 against the local IoTFlow-compatible backend (register, then telemetry with the API key);
...                 the backend's admin API must show every device and every reading. Hybrid sensors register
...                 over HTTP and publish their telemetry over MQTT. IoTFlow's site presets (a home, an office
...                 and a factory of temperature sensors, door locks, cameras, air quality monitors and
...                 thermostats) are created from their scenario files and report over MQTT.
Resource            ../../resources/iotix.resource
Library             Collections
Library             RequestsLibrary

Suite Setup         Start IoTFlow Demo Environment


*** Variables ***
# Site -> fleets of it: fleet name, model (IoTFlow profile), device count. 9 + 16 + 30 = 55 devices.
@{HOME}             home    iotflow-smart-sensor-energy-efficient    9
@{OFFICE}           office    iotflow-smart-sensor    16
@{FACTORY LINE}     factory-line    iotflow-smart-sensor-industrial    24
@{FACTORY ROBOTS}   factory-robots    iotflow-smart-sensor-high-frequency    6
# IoTFlow's presets (models/scenarios/home.yaml, office.yaml, factory.yaml) together: devices per model.
&{PRESET DEVICES}   temperature-sensor=18    door-lock=10    camera=14    air-quality-monitor=7    thermostat=6


*** Test Cases ***
Home, Office And Factory Register And Report
    [Documentation]    The home runs battery-saving sensors, the office the default profile, the factory
    ...    industrial sensors (vibration, power) plus fast ones with accelerometer and gyroscope on its
    ...    robots. Every device registers and sends its first reading at once; the backend has it all.
    FOR    ${site}    IN    ${HOME}    ${OFFICE}    ${FACTORY LINE}    ${FACTORY ROBOTS}
        Start Site    @{site}
    END
    FOR    ${site}    IN    ${HOME}    ${OFFICE}    ${FACTORY LINE}    ${FACTORY ROBOTS}
        Wait Until Fleet Is Running    ${site}[0]
        Telemetry Should Be Received From Fleet    ${site}[0]    min_messages=1    max_loss=0%    source=iotflow
    END

The Admin Stats Count Every Device And Reading
    [Documentation]    55 devices registered, active and online, at least one record each, and each site's
    ...    devices registered with its location.
    ${stats} =    GET On Session    iotflow    /api/v1/admin/stats
    Should Be Equal As Integers    ${stats.json()}[device_stats][total]    55
    Should Be Equal As Integers    ${stats.json()}[device_stats][active]    55
    Should Be Equal As Integers    ${stats.json()}[device_stats][online]    55
    Should Be True    ${stats.json()}[telemetry_stats][total_records] >= 55
    ${registered} =    GET On Session    iotflow    /api/v1/admin/devices
    ${per location} =    Evaluate    dict(collections.Counter(d['location'] for d in $registered.json()['devices']))
    ...    modules=collections
    Should Be Equal    ${per location}
    ...    ${{ {'home': 9, 'office': 16, 'factory-line': 24, 'factory-robots': 6} }}

Each Profile Reports Its Own Readings
    [Documentation]    The backend stores what each profile measures: vibration and power on the factory line,
    ...    motion on the robots, the basic climate readings in the office.
    ${machine} =    Latest Reading Of    factory-line-00
    Dictionary Should Contain Key    ${machine}    vibration
    Dictionary Should Contain Key    ${machine}    power_consumption
    ${robot arm} =    Latest Reading Of    factory-robots-00
    Dictionary Should Contain Key    ${robot arm}    accel_z
    Dictionary Should Contain Key    ${robot arm}    gyro_x
    ${desk} =    Latest Reading Of    office-00
    Dictionary Should Contain Key    ${desk}    battery_level

Hybrid Sensors Publish Their Telemetry Over MQTT
    [Documentation]    Greenhouse sensors register over HTTP, fetch their MQTT credentials from the backend and
    ...    publish to iotflow/devices/<id>/telemetry, where a subscriber checks every reading.
    Connect To MQTT Broker    ${BROKER}[host]    ${BROKER}[port]    alias=iotflow-mqtt
    Subscribe To Topic    iotflow/devices/+/telemetry    qos=1    alias=iotflow-mqtt
    ${fleet} =    Create Fleet    iotflow-hybrid-sensor    count=5    name=greenhouse    id_pattern=greenhouse-{index}
    ...    host=${BACKEND}[host]    port=${BACKEND}[port]
    Start Fleet    ${fleet}
    Wait Until Fleet Is Running    ${fleet}
    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=2    max_loss=0%    source=iotflow-mqtt
    ${stats} =    GET On Session    iotflow    /api/v1/admin/stats
    Should Be Equal As Integers    ${stats.json()}[device_stats][total]    60

IoTFlow's Site Presets Run As Scenarios
    [Documentation]    The presets of IoTFlow's fleet simulator as scenario files: a home of 9, an office of 16 and
    ...    a factory of 30 devices of five kinds, 55 in all, sending to the local broker; every device's readings
    ...    arrive there.
    ${fleets} =    Create Fleets From Presets    home    office    factory
    FOR    ${fleet}    IN    @{fleets}
        Start Fleet    ${fleet}
    END
    FOR    ${fleet}    IN    @{fleets}
        Wait Until Fleet Is Running    ${fleet}
        Telemetry Should Be Received From Fleet    ${fleet}    min_messages=1    max_loss=0%    source=default
    END
    ${per model} =    Devices Per Model    @{fleets}
    Should Be Equal    ${per model}    ${PRESET DEVICES}    type=dict[str, int]


*** Keywords ***
Start IoTFlow Demo Environment
    [Documentation]    The local broker and models, a local IoTFlow backend that hands out that broker to hybrid
    ...    devices, and a RequestsLibrary session ``iotflow`` with the backend's admin token.
    Start Local Test Environment
    ${started} =    Start Local IoTFlow Backend    mqtt_host=${BROKER}[host]    mqtt_port=${BROKER}[port]
    VAR    ${BACKEND}    ${started}    scope=SUITE
    VAR    &{admin headers}    Authorization=admin ${started}[admin_token]
    Create Session    iotflow    ${started}[url]    headers=${admin headers}

Start Site
    [Documentation]    Creates ${count} devices of ${model} named ${name}-00, ${name}-01, ... against the backend
    ...    and starts them in batches of 10 (the fleet's name is their registered location).
    [Arguments]    ${name}    ${model}    ${count}
    ${fleet} =    Create Fleet    ${model}    count=${count}    name=${name}    id_pattern=${name}-{index:02d}
    ...    host=${BACKEND}[host]    port=${BACKEND}[port]
    Start Fleet    ${fleet}    strategy=batch    batch_size=10    delay=200ms

Latest Reading Of
    [Documentation]    The data of the newest record the backend stored for device ${name}.
    [Arguments]    ${name}
    ${registered} =    GET On Session    iotflow    /api/v1/admin/devices
    ${id} =    Evaluate    {d['name']: d['id'] for d in $registered.json()['devices']}[$name]
    ${latest} =    GET On Session    iotflow    /api/v1/telemetry/${id}/latest
    RETURN    ${latest.json()}[latest_data][data]

Create Fleets From Presets
    [Documentation]    Creates the fleets of each of IoTFlow's ${presets} (models/scenarios/<preset>.yaml) against
    ...    the local broker; returns the names of all of them.
    [Arguments]    @{presets}
    VAR    @{fleets}    @{EMPTY}
    FOR    ${preset}    IN    @{presets}
        ${created} =    Create Fleets From Scenario    ${MODELS}/scenarios/${preset}.yaml
        ...    host=${BROKER}[host]    port=${BROKER}[port]
        Append To List    ${fleets}    @{created}
    END
    RETURN    ${fleets}

Devices Per Model
    [Documentation]    How many devices ${fleets} have together, per model id.
    [Arguments]    @{fleets}
    VAR    @{models}    @{EMPTY}
    FOR    ${fleet}    IN    @{fleets}
        ${stats} =    Get Fleet Stats    ${fleet}
        FOR    ${_}    IN RANGE    ${stats}[deviceCount]
            Append To List    ${models}    ${stats}[model]
        END
    END
    ${counts} =    Evaluate    dict(collections.Counter($models))    modules=collections
    RETURN    ${counts}
