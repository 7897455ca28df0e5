*** Settings ***
Documentation       Charts in the log and run reports: Log Fleet Charts embeds SVG charts of a running fleet and of
...                 a deleted one; Export Run Report writes html, md, csv (Locust's three files) and json into
...                 the output folder, and the files hold the fleet's figures; unknown fleets and formats fail
...                 naming what there is.
Resource            ../acceptance.resource

Suite Setup         Start Acceptance Environment
Suite Teardown      Stop Acceptance Environment
Test Teardown       Delete All Fleets


*** Variables ***
${REPORTS}      ${OUTPUT DIR}${/}charts-and-reports


*** Test Cases ***
Charts Of A Running Fleet Go Into The Log
    [Documentation]    Charts of a fleet with a dropout marked on them, then of its last 2 seconds only.
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=4    name=charted    id_pattern=charted-{index}
    Sleep    1.5s
    Drop Devices    ${fleet}    count=2    delay=0s    duration=0s    reconnect=True    reconnect_delay=1s
    Sleep    2s
    Log Fleet Charts    ${fleet}
    Log Fleet Charts    ${fleet}    last=2s

A Deleted Fleet Keeps Its Charts And Its Place In Reports
    [Documentation]    The figures of a deleted fleet stay: its charts, and a report that names it as deleted.
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=2    name=gone    id_pattern=gone-{index}
    Sleep    2s
    Delete Fleet    ${fleet}
    Log Fleet Charts    ${fleet}
    ${path} =    Export Run Report    ${REPORTS}${/}gone.json    fleets=gone
    ${report} =    Read JSON    ${path}
    Should Be True    ${report}[fleets][0][deleted]
    Should Be True    ${report}[fleets][0][totals][sent] > 0

The Run Report In Every Format
    [Documentation]    One fleet, 3 s: each format holds its figures (the CSV in Locust's columns).
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=4    name=reported    id_pattern=reported-{index}
    Sleep    3s
    Stop Fleet    ${fleet}
    HTML Report Should Show    ${fleet}
    Markdown Report Should Show    ${fleet}
    CSV Reports Should Show    ${fleet}
    JSON Report Should Show    ${fleet}

Unknown Fleets And Formats Fail Naming What There Is
    [Documentation]    A fleet without figures lists those with; a format that does not exist lists the formats.
    ${fleet} =    Create Local Fleet    acceptance-sensor    name=known    id_pattern=known-{index}
    Run Keyword And Expect Error    No fleet named 'nope' has figures (fleets with figures: *known*).
    ...    Log Fleet Charts    nope
    Run Keyword And Expect Error    No fleet named 'nope' has figures (fleets with figures: *'known'*).
    ...    Export Run Report    ${REPORTS}${/}nope.html    fleets=${{['${fleet}', 'nope']}}
    Run Keyword And Expect Error
    ...    Cannot write a run report in the extension of *: the formats are html, md, csv, json*
    ...    Export Run Report    ${REPORTS}${/}run.pdf
    VAR    ${pdf}    pdf    # a variable: Robot's dry run converts literal arguments and would fail there
    Run Keyword And Expect Error    *'pdf'*html*md*csv*json*
    ...    Export Run Report    ${REPORTS}${/}run.html    format=${pdf}


*** Keywords ***
HTML Report Should Show
    [Documentation]    The HTML report of ${fleet} is one page with its table and its four charts, nothing external.
    [Arguments]    ${fleet}
    ${path} =    Export Run Report    ${REPORTS}${/}run.html    fleets=${{['${fleet}']}}
    ${page} =    Get File    ${path}
    Should Contain    ${page}    id="fleet-${fleet}"
    ${charts} =    Evaluate    $page.count('<svg')
    Should Be Equal As Integers    ${charts}    4
    Should Not Match Regexp    ${page}    (?i)(src|href)\\s*=\\s*["']?(https?:)?//

Markdown Report Should Show
    [Documentation]    The Markdown summary has the fleets' table with a line for ${fleet}.
    [Arguments]    ${fleet}
    ${path} =    Export Run Report    ${REPORTS}${/}summary.txt    format=md
    ${text} =    Get File    ${path}
    Should Contain    ${text}    | Fleet | Protocol | Devices | Sent | Acked | Failed | Dropped | Loss % | p99 ms |
    Should Contain    ${text}    | ${fleet} | mqtt | 4 |

CSV Reports Should Show
    [Documentation]    Locust's stats (a line for ${fleet} and an Aggregated one), history and failures files.
    [Arguments]    ${fleet}
    ${path} =    Export Run Report    ${REPORTS}${/}run_stats.csv    fleets=${{['${fleet}']}}
    ${stats} =    Get File    ${path}
    Should Start With    ${stats}    Type,Name,Request Count,Failure Count,Median Response Time,
    Should Contain    ${stats}    \nMQTT,${fleet},
    Should Contain    ${stats}    \n,Aggregated,
    ${history} =    Get File    ${REPORTS}${/}run_stats_history.csv
    Should Start With    ${history}    Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,
    File Should Exist    ${REPORTS}${/}run_failures.csv

JSON Report Should Show
    [Documentation]    The JSON report has ${fleet}'s rows, which add up to what it sent.
    [Arguments]    ${fleet}
    ${path} =    Export Run Report    ${REPORTS}${/}run.json    fleets=${{['${fleet}']}}
    ${report} =    Read JSON    ${path}
    VAR    ${data}    ${report}[fleets][0]
    ${sent} =    Evaluate    sum(row['sent'] for row in $data['rows'])
    Should Be Equal As Integers    ${sent}    ${data}[totals][sent]
    Should Be True    ${sent} > 0

Read JSON
    [Documentation]    The JSON document in file ${path}.
    [Arguments]    ${path}
    ${text} =    Get File    ${path}
    ${document} =    Evaluate    json.loads($text)    modules=json
    RETURN    ${document}
