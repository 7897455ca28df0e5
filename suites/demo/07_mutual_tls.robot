*** Settings ***
Documentation       Mutual TLS: ten secure environmental sensors, each with its own certificate (common name = its
...                 device id), connect to a local Mosquitto that requires client certificates of its CA; a TLS
...                 receiver must get every reading they send.
Resource            ../../resources/iotix.resource
Library             OperatingSystem

Suite Setup         Start Mutual TLS Demo Environment
Suite Teardown      Remove Demo Directory


*** Test Cases ***
Secure Sensors Report Over Mutual TLS
    [Documentation]    The CA signs one certificate per device into the fleet's tls_dir, where the model's
    ...    connection.tls (certs/${deviceId}.pem, .key, certs/ca.pem) finds them; the fleet sends for a few seconds
    ...    and every reading arrives, none lost, none duplicated.
    ${fleet} =    Create Fleet    secure-env-sensor    count=10    name=secure    id_pattern=secure-{index:02d}
    ...    host=${TLS BROKER}[host]    port=${TLS BROKER}[port]    tls_dir=${DEMO DIR}/devices    seed=7
    ${certs} =    Create Device Certificates    ${fleet}    ${TLS BROKER}[caDir]
    Should Be Equal As Integers    ${certs}[count]    10
    Start Fleet    ${fleet}
    Wait Until Fleet Is Running    ${fleet}    timeout=30s
    Sleep    3s    reason=let the sensors send a few readings
    ${report} =    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=3    max_loss=0%
    ...    source=tls
    Should Be Equal As Integers    ${report}[duplicates]    0
    Stop Fleet    ${fleet}


*** Keywords ***
Start Mutual TLS Demo Environment
    [Documentation]    Loads the shipped models, starts the local TLS broker with a new CA in ${DEMO DIR}/ca (sets
    ...    ${TLS BROKER}) and connects a receiver 'tls' with the broker's client certificate.
    ${demo_dir} =    Evaluate    tempfile.mkdtemp(prefix='iotix-demo-tls-')    modules=tempfile
    VAR    ${DEMO DIR}    ${demo_dir}    scope=SUITE
    Load Device Models    ${MODELS}
    ${secure_broker} =    Start Local MQTT Broker    tls=True    ca_dir=${DEMO DIR}/ca
    VAR    ${TLS BROKER}    ${secure_broker}    scope=SUITE
    Connect To MQTT Broker    ${TLS BROKER}[host]    ${TLS BROKER}[port]    alias=tls    ca_file=${TLS BROKER}[ca]
    ...    cert_file=${TLS BROKER}[clientCert]    key_file=${TLS BROKER}[clientKey]
    Subscribe To Topic    iotix/secure-env-sensor/+/telemetry    qos=1    alias=tls

Remove Demo Directory
    [Documentation]    Removes ${DEMO DIR} (the CA and the device keys). The broker stops with the suite.
    ${demo_dir} =    Get Variable Value    ${DEMO DIR}    ${EMPTY}
    IF    $demo_dir    Remove Directory    ${demo_dir}    recursive=True
