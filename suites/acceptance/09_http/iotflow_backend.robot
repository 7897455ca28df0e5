*** Settings ***
Documentation       Start Local IoTFlow Backend, Stop Local IoTFlow Backend and Restart Local IoTFlow Backend, read
...                 with RequestsLibrary and curl: the address and admin token, the admin endpoints, what a fleet
...                 leaves in the store (registrations, telemetry, heartbeats), a restart that devices ride out
...                 with counted failures, and the errors. Each test starts a backend of its own.
Resource            http.resource

Suite Setup         Start Acceptance Environment
Suite Teardown      Stop Acceptance Environment
Test Setup          Start IoTFlow Test Backend
Test Teardown       Stop IoTFlow Test Backend


*** Test Cases ***
Start Local IoTFlow Backend Returns Its Address And Admin Token
    [Documentation]    url, host, port, admin_token and db_path of a running backend; a second start returns the
    ...    running backend.
    Values Should Include    backend    ${BACKEND}    host=127.0.0.1    url=http://127.0.0.1:${BACKEND}[port]
    Should Not Be Empty    ${BACKEND}[admin_token]
    File Should Exist    ${BACKEND}[db_path]
    ${again} =    Start Local IoTFlow Backend
    Should Be Equal    ${again}    ${BACKEND}

The Backend Answers Its Health Check
    [Documentation]    /health answers without a token, to RequestsLibrary and to curl.
    ${health} =    GET    ${BACKEND}[url]/health
    Should Be Equal    ${health.json()}[status]    healthy
    ${curl} =    Run Process    curl    --silent    --show-error    --fail    ${BACKEND}[url]/health    timeout=20s
    Should Be Equal As Integers    ${curl.rc}    0    curl failed: ${curl.stderr}
    Should Be Equal    ${{ json.loads($curl.stdout)['status'] }}    healthy

The Admin Endpoints Need The Admin Token
    [Documentation]    Without ``Authorization: admin <token>``, or with another token, the admin endpoints answer
    ...    401; with it they answer.
    GET    ${BACKEND}[url]/api/v1/admin/stats    expected_status=401
    GET    ${BACKEND}[url]/api/v1/admin/devices    headers=${{ {'Authorization': 'admin wrong'} }}
    ...    expected_status=401
    ${stats} =    Admin Stats
    Values Should Include    stats    ${stats}    status=success    device_stats.total=0
    ...    telemetry_stats.total_records=0

Registrations Carry The Fields Of The Model
    [Documentation]    Each device registers under its id with the model's registration block (the location is
    ...    the fleet's name here) and is active and online.
    Start IoTFlow Fleet    acceptance-iotflow-sensor    count=2    name=lab    id_pattern=lab-{index}
    ${devices} =    Registered Devices
    Registered Devices Should Be    lab-0    lab-1
    Values Should Include    lab-0    ${devices}[lab-0]    device_type=sensor    location=lab    status=active
    ...    description=IoTix acceptance sensor    firmware_version=2.0.0    hardware_version=acc-1
    ${stats} =    Admin Stats
    Values Should Include    stats    ${stats}    device_stats.total=2    device_stats.active=2
    ...    device_types.sensor=2

Telemetry Reaches The Store
    [Documentation]    The backend's store is the default receiver of an IoTFlow fleet (source=iotflow for the
    ...    Metrics keywords). Each record holds the readings under data and the envelope under metadata.
    ${fleet} =    Start IoTFlow Fleet    acceptance-iotflow-sensor    count=2    name=store    id_pattern=store-{index}
    ${report} =    Telemetry Should Be Received From Fleet    ${fleet}    min_messages=3    max_loss=0%
    Values Should Include    report    ${report}    devices=2    lost=0    duplicates=0
    ${metrics} =    Get Telemetry Report    ${fleet}    source=iotflow
    Values Should Include    metrics    ${metrics}    devices=2    silentDevices=0
    ${id} =    Backend Id Of    store-0
    ${records} =    GET On Session    iotflow    /api/v1/telemetry/${id}
    ${first} =    Evaluate    $records.json()['data'][-1]
    Values Should Include    record    ${first}    metadata.deviceId=store-0    metadata.seq=0    data.counter=0
    Should Be True    18 <= ${first}[data][temperature] <= 26

Curl Reads The Latest Record
    [Documentation]    An independent client: curl with the admin token reads a device's newest record.
    Start IoTFlow Fleet    acceptance-iotflow-sensor    name=curl    id_pattern=curl-{index}
    Wait Until Keyword Succeeds    10s    200ms    Device Should Have Delivered More Than    curl-0    0
    ${id} =    Backend Id Of    curl-0
    ${curl} =    Run Process    curl    --silent    --show-error    --fail    --header
    ...    Authorization: admin ${BACKEND}[admin_token]    ${BACKEND}[url]/api/v1/telemetry/${id}/latest
    ...    timeout=20s
    Should Be Equal As Integers    ${curl.rc}    0    curl failed: ${curl.stderr}
    ${latest} =    Evaluate    json.loads($curl.stdout)['latest_data']
    Values Should Include    latest record    ${latest}    metadata.deviceId=curl-0

Heartbeats Keep The Devices Online
    [Documentation]    Each device sends a heartbeat every second (the model's heartbeatIntervalMs); none fails.
    ${fleet} =    Start IoTFlow Fleet    acceptance-iotflow-sensor    count=2    name=beat    id_pattern=beat-{index}
    Wait Until Keyword Succeeds    10s    200ms    Heartbeats Should Have Been Sent    ${fleet}    4
    ${stats} =    Admin Stats
    Values Should Include    stats    ${stats}    device_stats.online=2

Devices Ride Out A Restart Of The Backend
    [Documentation]    While the backend is down every send fails with the reason (counted, never a hang); after
    ...    Restart Local IoTFlow Backend the devices deliver again with the API keys they had, and the data
    ...    from before the restart is still there.
    ${fleet} =    Start IoTFlow Fleet    acceptance-iotflow-sensor    count=2    name=restart
    ...    id_pattern=restart-{index}
    Wait Until Fleet Has Sent    ${fleet}    4
    ${restarted} =    Restart Local IoTFlow Backend    down_for=2s
    Should Be Equal    ${restarted}[port]    ${BACKEND}[port]
    ${status} =    Device Should Have Failed    restart-0    1
    Should Contain    ${status}[lastError]    cannot connect to 127.0.0.1:${BACKEND}[port]
    Wait Until Keyword Succeeds    10s    200ms    Device Should Have Delivered More Than    restart-0
    ...    ${status}[messagesAcked]
    Registered Devices Should Be    restart-0    restart-1
    ${stats} =    Admin Stats
    Should Be True    ${stats}[telemetry_stats][total_records] >= ${status}[messagesAcked]

A Check That Tolerates Loss Does Not Wait For Lost Messages
    [Documentation]    Readings sent while the backend was down are lost for good: a check with max_loss that
    ...    covers them passes without waiting out its timeout; a check without fails and counts them.
    ${fleet} =    Start IoTFlow Fleet    acceptance-iotflow-sensor    count=2    name=lossy    id_pattern=lossy-{index}
    Wait Until Fleet Has Sent    ${fleet}    4
    Restart Local IoTFlow Backend    down_for=2s
    Wait Until Keyword Succeeds    10s    200ms    Device Should Have Delivered More Than    lossy-0    4
    ${t0} =    Now
    ${report} =    Telemetry Should Be Received From Fleet    ${fleet}    max_loss=90%    timeout=60s
    ${elapsed} =    Seconds Since    ${t0}
    Should Be True    ${report}[lost] > 0 and ${elapsed} < 30    lost ${report}[lost] in ${elapsed} s
    Run Keyword And Expect Error    Fleet 'lossy' lost * of * messages (*), more than the allowed 0 %*
    ...    Telemetry Should Be Received From Fleet    ${fleet}    timeout=1s

A Stopped Backend Is Gone
    [Documentation]    After Stop Local IoTFlow Backend nothing answers and it cannot be restarted; stopping
    ...    twice is harmless; a new start gives an empty backend.
    Stop Local IoTFlow Backend
    Stop Local IoTFlow Backend
    ${curl} =    Run Process    curl    --silent    --max-time    5    ${BACKEND}[url]/health    timeout=20s
    Should Not Be Equal As Integers    ${curl.rc}    0
    Run Keyword And Expect Error    No local IoTFlow backend is running: use Start Local IoTFlow Backend first.
    ...    Restart Local IoTFlow Backend
    Delete All Sessions
    Start IoTFlow Test Backend
    ${stats} =    Admin Stats
    Values Should Include    stats    ${stats}    device_stats.total=0

A Stopped Backend Is No Receiver
    [Documentation]    Without a backend an IoTFlow fleet has no default receiver, and source=iotflow names none.
    Stop Local IoTFlow Backend
    ${fleet} =    Create Fleet    acceptance-iotflow-sensor    name=unheard    id_pattern=unheard-{index}
    Run Keyword And Expect Error    No receiver named 'iotflow' (available: 'default'); *
    ...    Telemetry Should Be Received From Fleet    ${fleet}    source=iotflow
    Run Keyword And Expect Error
    ...    Fleet 'unheard' (http, IoTFlow flow): no local IoTFlow backend collects its telemetry (available: *
    ...    Telemetry Should Be Received From Fleet    ${fleet}

A Rate Limit That Is Not N/S Is Refused
    [Documentation]    rate_limit= is ``N/S``: N requests per S seconds per device key.
    Stop Local IoTFlow Backend
    Run Keyword And Expect Error
    ...    Cannot start the local IoTFlow backend: Rate limit must look like 'N/S' (N requests per S seconds)*
    ...    Start Local IoTFlow Backend    rate_limit=fast
    Run Keyword And Expect Error    Cannot start the local IoTFlow backend: *
    ...    Start Local IoTFlow Backend    rate_limit=0/1


*** Keywords ***
Heartbeats Should Have Been Sent
    [Documentation]    Fails unless the devices of ${fleet} sent at least ${count} heartbeats, none failed.
    [Arguments]    ${fleet}    ${count}
    ${stats} =    Get Fleet Stats    ${fleet}
    Should Be True    ${stats}[transport][heartbeatsSent] >= ${count}
    Should Be Equal As Integers    ${stats}[transport][heartbeatsFailed]    0
