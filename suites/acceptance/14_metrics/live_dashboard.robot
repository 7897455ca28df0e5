*** Settings ***
Documentation       The live dashboard: a page on a free port of 127.0.0.1 that shows every fleet, and the same
...                 figures as JSON at /api/snapshot, for whoever has its token; a request without it gets 401.
...                 The address comes back as a Secret (the token never reaches the log). The page itself is
...                 tested in headless Chromium by tests/integration/test_live_dashboard.py.
Resource            ../acceptance.resource
Library             Collections
Library             RequestsLibrary

Suite Setup         Start Acceptance Environment
Suite Teardown      Stop Acceptance Environment
Test Teardown       Stop Dashboard And Delete Fleets


*** Variables ***
# acceptance-sensor sends one reading every 200 ms: 4 devices send 20 messages a second.
${DEVICES}      4


*** Test Cases ***
The Dashboard Shows A Running Fleet
    [Documentation]    The snapshot lists the fleet with its model, its devices all connected and messages sent.
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=${DEVICES}    name=live    id_pattern=live-{index}
    ${url} =    Start Live Dashboard
    Address Should Be Local With A Token    ${url}
    Wait Until Keyword Succeeds    10s    0.5s    Dashboard Should Show Fleet Sending    ${fleet}

A Request Without The Token Gets 401
    [Documentation]    Without the token, or with a wrong one, every path answers 401.
    ${url} =    Start Live Dashboard
    ${base} =    Evaluate    $url.value.split('?')[0]
    GET    ${base}api/snapshot    expected_status=401
    GET    url=${base}events    params=token=not-the-token    expected_status=401
    GET    ${base}    expected_status=401

A Given Token Is Accepted As Bearer Credentials
    [Documentation]    A token of the user's own (a Secret) works in an Authorization header.
    ${token} =    Evaluate    robot.api.types.Secret('acceptance-live-token')    modules=robot.api.types
    ${url} =    Start Live Dashboard    token=${token}
    ${base} =    Evaluate    $url.value.split('?')[0]
    VAR    &{headers}    Authorization=Bearer acceptance-live-token
    ${response} =    GET    ${base}api/snapshot    headers=${headers}    expected_status=200
    Should Start With    ${response.headers}[Content-Type]    application/json
    Dictionary Should Contain Key    ${response.json()}    fleets

Only One Dashboard Runs At A Time
    [Documentation]    A second start fails naming the running one; after a stop a new one starts.
    Start Live Dashboard
    Run Keyword And Expect Error    A live dashboard is already running at http://127.0.0.1:*
    ...    Start Live Dashboard
    Stop Live Dashboard
    Run Keyword And Expect Error    No live dashboard is running*    Get Live Dashboard Snapshot
    Start Live Dashboard


*** Keywords ***
Address Should Be Local With A Token
    [Documentation]    ${url} is a Secret holding http://127.0.0.1:PORT/?token=TOKEN (22 URL-safe characters).
    [Arguments]    ${url}
    Should Be Equal    ${{ type($url).__name__ }}    Secret
    ${shape_ok} =    Evaluate    re.fullmatch(r'http://127\\.0\\.0\\.1:\\d+/\\?token=[\\w-]{22}', $url.value) is not None
    ...    modules=re
    Should Be True    ${shape_ok}    The dashboard's address is not http://127.0.0.1:PORT/?token=TOKEN.

Dashboard Should Show Fleet Sending
    [Documentation]    The snapshot has ${fleet}, all its devices connected, messages sent in the last second.
    [Arguments]    ${fleet}
    ${snapshot} =    Get Live Dashboard Snapshot
    ${fleets} =    Evaluate    {f['name']: f for f in $snapshot['fleets']}
    Dictionary Should Contain Key    ${fleets}    ${fleet}
    Should Be Equal    ${fleets}[${fleet}][model]    acceptance-sensor
    Should Be Equal As Integers    ${fleets}[${fleet}][connected]    ${DEVICES}
    Should Be True    ${fleets}[${fleet}][rate] > 0

Stop Dashboard And Delete Fleets
    [Documentation]    Test teardown: stops the dashboard (if one runs) and deletes every fleet.
    Stop Live Dashboard
    Delete All Fleets
