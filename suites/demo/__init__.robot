*** Settings ***
Documentation       The demo: what IoTix does, suite by suite. When every suite has run, the run report of all
...                 their fleets (charts, a table per fleet, the worst devices, the fault and dropout timeline) is
...                 written into the output folder as HTML (it opens offline) and as a Markdown summary.
Library             iotix.Metrics

Suite Teardown      Write The Run Report


*** Keywords ***
Write The Run Report
    [Documentation]    The run report of every fleet of the demo, as HTML and as Markdown.
    Export Run Report    ${OUTPUT DIR}/run-report.html
    Export Run Report    ${OUTPUT DIR}/run-report.md
