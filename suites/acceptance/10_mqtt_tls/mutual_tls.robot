*** Settings ***
Documentation       MQTT over mutual TLS: Start Local MQTT Broker tls=True (Mosquitto requiring a client certificate
...                 of its CA, user name = the certificate's common name), Create Device Certificates (one per
...                 device, where the model's connection.tls patterns find them under the fleet's tls_dir), Create
...                 Fleet tls_dir=, a TLS receiver (Connect To MQTT Broker ca_file= cert_file= key_file=), and
...                 devices refused with the reason: an expired certificate, a certificate of another CA.
...                 tests/integration/test_secrets.py runs this suite at TRACE level and searches its output for
...                 private keys.
Resource            ../acceptance.resource

Suite Setup         Start TLS Environment
Suite Teardown      Stop Acceptance Environment
Test Teardown       Delete All Fleets


*** Variables ***
${SECURE MODEL}     secure-env-sensor


*** Test Cases ***
The Local TLS Broker Returns Its CA And A Client Certificate
    [Documentation]    The TLS broker runs beside the plain one: mqtts:// URL, the CA made in ca_dir, a client
    ...    certificate for receivers. A second start returns it; a plain MQTT client cannot connect to it.
    Values Should Include    TLS broker    ${TLS}    host=127.0.0.1    kind=mosquitto    tls=True
    Should Be Equal    ${TLS}[url]    mqtts://127.0.0.1:${TLS}[port]
    Should Be Equal    ${TLS}[ca]    ${WORKDIR}${/}ca${/}ca.pem
    File Should Exist    ${WORKDIR}/ca/ca.key
    File Should Exist    ${TLS}[clientCert]
    Should Not Be Equal    ${TLS}[port]    ${BROKER}[port]
    ${again} =    Start Local MQTT Broker    tls=True    ca_dir=${WORKDIR}/ca
    Should Be Equal    ${again}    ${TLS}
    Run Keyword And Expect Error    Cannot connect 'plain' to MQTT broker 127.0.0.1:${TLS}[port]: *
    ...    Connect To MQTT Broker    ${TLS}[host]    ${TLS}[port]    alias=plain    timeout=3s

Devices With Their Own Certificates Send Over Mutual TLS
    [Documentation]    Create Device Certificates writes one certificate and key per device (and the CA) where the
    ...    model's patterns point under tls_dir; the fleet connects and every reading reaches the TLS receiver.
    ${fleet} =    Create Secure Fleet    secure    count=5
    ${certs} =    Create Device Certificates    ${fleet}    ${TLS}[caDir]
    Values Should Include    certificates    ${certs}    count=5    directory=${WORKDIR}${/}secure
    ...    caFile=${WORKDIR}${/}secure${/}certs${/}ca.pem
    Device Certificate Should Exist    ${certs}[directory]    secure-4
    Start Fleet    ${fleet}
    Wait Until Fleet Is Running    ${fleet}    timeout=15s
    ${report} =    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=2    max_loss=0%
    ...    timeout=20s    source=tls
    Should Be Equal As Integers    ${report}[duplicates]    0
    Stop Fleet    ${fleet}

An Expired Certificate Is Refused And Named
    [Documentation]    The device checks its certificate before connecting; Wait Until Fleet Is Running names the
    ...    device and says the certificate expired. A fleet with valid certificates runs on beside it.
    ${good} =    Start Secure Fleet    fresh
    ${fleet} =    Create Secure Fleet    expired
    Create Device Certificates    ${fleet}    ${TLS}[caDir]    expired=True
    Start Fleet    ${fleet}
    ${error} =    Run Keyword And Expect Error    Fleet 'expired': 1 of 1 devices not running after 2 s*
    ...    Wait Until Fleet Is Running    ${fleet}    timeout=2s
    Should Match Regexp    ${error}    \\(expired-0\\): the TLS client certificate '.*expired-0.pem' .*expired on
    ${status} =    Get Device Status    expired-0
    Should Start With    ${status}[lastError]    device 'expired-0': the TLS client certificate
    Wait Until Fleet Is Running    ${good}    timeout=1s

A Certificate Of Another CA Is Refused By The Broker
    [Documentation]    The device trusts the broker's CA but its own certificate is signed by another CA: the broker
    ...    refuses it and the device's error says so, with the issuer.
    ${fleet} =    Create Secure Fleet    alien
    Create Device Certificates    ${fleet}    ${WORKDIR}/other-ca
    Copy File    ${TLS}[ca]    ${WORKDIR}/alien/certs/ca.pem
    Start Fleet    ${fleet}
    ${error} =    Run Keyword And Expect Error    Fleet 'alien': 1 of 1 devices not running after 3 s*
    ...    Wait Until Fleet Is Running    ${fleet}    timeout=3s
    Should Contain    ${error}    refused the client certificate
    Should Contain    ${error}    unknown CA

Create Device Certificates Needs A TLS Directory And Client Certificates
    [Documentation]    Without tls_dir the keys would land next to the model file; a model without certFile does
    ...    not use client certificates. Both are refused with what to do.
    ${fleet} =    Create Fleet    ${SECURE MODEL}    name=no-dir    host=${TLS}[host]    port=${TLS}[port]
    Run Keyword And Expect Error    Fleet 'no-dir' has no tls_dir: create it with Create Fleet and tls_dir=*
    ...    Create Device Certificates    ${fleet}    ${TLS}[caDir]
    ${plain} =    Create Local Fleet    acceptance-sensor    name=plain    tls_dir=${WORKDIR}/plain
    Run Keyword And Expect Error    Fleet 'plain' (model 'acceptance-sensor') has no connection.tls with certFile*
    ...    Create Device Certificates    ${plain}    ${TLS}[caDir]


*** Keywords ***
Start TLS Environment
    [Documentation]    The acceptance environment plus the local TLS broker with its CA in ${WORKDIR}/ca (sets
    ...    ${TLS}) and a receiver 'tls' on it that presents the broker's client certificate.
    Start Acceptance Environment
    ${secure_broker} =    Start Local MQTT Broker    tls=True    ca_dir=${WORKDIR}/ca
    VAR    ${TLS}    ${secure_broker}    scope=SUITE
    Connect To MQTT Broker    ${TLS}[host]    ${TLS}[port]    alias=tls    ca_file=${TLS}[ca]
    ...    cert_file=${TLS}[clientCert]    key_file=${TLS}[clientKey]
    Subscribe To Topic    iotix/${SECURE MODEL}/+/telemetry    qos=1    alias=tls

Create Secure Fleet
    [Documentation]    Creates fleet ${name} of ${count} secure-env-sensor devices (ids ${name}-{index}) against the
    ...    TLS broker, with its certificates in ${WORKDIR}/${name}.
    [Arguments]    ${name}    ${count}=1
    ${fleet} =    Create Fleet    ${SECURE MODEL}    count=${count}    name=${name}    id_pattern=${name}-{index}
    ...    host=${TLS}[host]    port=${TLS}[port]    tls_dir=${WORKDIR}/${name}    reconnect_base=200ms
    ...    reconnect_cap=1s
    RETURN    ${fleet}

Start Secure Fleet
    [Documentation]    Creates fleet ${name} (see Create Secure Fleet) with valid certificates, starts it and waits
    ...    until it runs.
    [Arguments]    ${name}    ${count}=1
    ${fleet} =    Create Secure Fleet    ${name}    ${count}
    Create Device Certificates    ${fleet}    ${TLS}[caDir]
    Start Fleet    ${fleet}
    Wait Until Fleet Is Running    ${fleet}    timeout=15s
    RETURN    ${fleet}

Device Certificate Should Exist
    [Documentation]    Checks that ${directory}/certs has the certificate and the private key of ${device_id}.
    [Arguments]    ${directory}    ${device_id}
    File Should Exist    ${directory}/certs/${device_id}.pem
    File Should Exist    ${directory}/certs/${device_id}.key
