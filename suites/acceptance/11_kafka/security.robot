*** Settings ***
Documentation       Kafka over TLS and SASL: a local broker that requires both, a Kafka fleet that logs in with
...                 a Secret password over TLS (its model names the CA and the mechanism), a test client with the
...                 same settings that receives every reading, and logins that must be refused.
Resource            kafka.resource

Suite Setup         Start Secured Kafka Environment
Suite Teardown      Stop Acceptance Environment


*** Variables ***
${USER}                     iotix-kafka
${PASSWORD: Secret}         %{IOTIX_TEST_PASSWORD=iotix-acceptance-password}
${WRONG PASSWORD: Secret}   %{IOTIX_TEST_WRONG_PASSWORD=not-the-password}


*** Test Cases ***
A Kafka Fleet Produces Over TLS With A SASL Login
    [Documentation]    Devices of a model with connection.tls and connection.sasl (SCRAM-SHA-256) log in with
    ...    Create Fleet's username and Secret password; a SCRAM-SHA-512 test client over TLS gets every reading.
    Connect To Kafka    ${SECURE}[bootstrap]    alias=secure    ca_file=${SECURE}[ca]
    ...    sasl_mechanism=SCRAM-SHA-512    username=${USER}    password=${PASSWORD}
    Subscribe To Kafka Topic    acceptance.kafka.secure    alias=secure
    ${fleet} =    Create Fleet    acceptance-kafka-secure    count=2    name=secure    host=${SECURE}[host]
    ...    port=${SECURE}[port]    username=${USER}    password=${PASSWORD}    tls_dir=${SECURE}[caDir]
    Start Fleet    ${fleet}
    Wait Until Fleet Is Running    ${fleet}    timeout=15s
    Wait Until Fleet Has Sent    ${fleet}    6
    Stop Fleet    ${fleet}
    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=3    max_loss=0%    source=kafka:secure
    Fleet Stats Should Include    ${fleet}    messagesFailed=0    transport.security=SASL_SSL
    [Teardown]    Delete Fleets And Disconnect From Kafka    secure

A Wrong Password Or A Plaintext Client Is Refused
    [Documentation]    The broker refuses a login with the wrong password, and a client without TLS gets no
    ...    answer from the TLS listener: both say so.
    Run Keyword And Expect Error    *SASL SCRAM-SHA-256 as '${USER}'*    Connect To Kafka    ${SECURE}[bootstrap]
    ...    alias=wrong    timeout=3s    ca_file=${SECURE}[ca]    sasl_mechanism=SCRAM-SHA-256    username=${USER}
    ...    password=${WRONG PASSWORD}
    Run Keyword And Expect Error    *TLS listener*    Connect To Kafka    ${SECURE}[bootstrap]    alias=plain
    ...    timeout=3s

A Running Broker With Other Security Is Not Returned As If It Were Asked For
    [Documentation]    Start Local Kafka Broker does not hand back the secured broker to a call that asks for a
    ...    plaintext one.
    Run Keyword And Expect Error    *already runs*SASL_SSL*    Start Local Kafka Broker


*** Keywords ***
Start Secured Kafka Environment
    [Documentation]    The acceptance environment plus a local Kafka broker with TLS and a SASL user: ${SECURE}.
    Start Acceptance Environment
    ${broker} =    Start Local Kafka Broker    tls=True    sasl_username=${USER}    sasl_password=${PASSWORD}
    Should Be Equal    ${broker}[securityProtocol]    SASL_SSL
    VAR    ${SECURE}    ${broker}    scope=SUITE
