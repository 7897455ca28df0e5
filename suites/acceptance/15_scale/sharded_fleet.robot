*** Settings ***
Documentation       A fleet split over shards (Ray actors, each a process of its own, on a local Ray started on
...                 demand) acts as one fleet: stats summed over the shards, devices found on whichever shard
...                 holds them, one dropout chosen over the whole fleet, one network fault on every shard, and
...                 the per-second figures added up. Bad shard counts fail before anything starts.
Resource            ../acceptance.resource

Suite Setup         Start Acceptance Environment
Suite Teardown      Stop Acceptance Environment
Test Teardown       Delete All Fleets


*** Variables ***
${DEVICES}      12
${SHARDS}       3


*** Test Cases ***
A Sharded Fleet Answers As One Fleet
    [Documentation]    12 devices over 3 shards: the stats count all 12 and list the shards with their device
    ...    ranges; a device in the last shard answers with its global index.
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=${DEVICES}    name=one    shards=${SHARDS}
    ${stats} =    Get Fleet Stats    ${fleet}
    Should Be Equal As Integers    ${stats}[runningDeviceCount]    ${DEVICES}
    Length Should Be    ${stats}[shards]    ${SHARDS}
    Should Be Equal    ${stats}[shards][2][first]    one-8
    Devices In State Should Be    ${fleet}    running    ${DEVICES}
    ${ids} =    Get Devices    ${fleet}
    Length Should Be    ${ids}    ${DEVICES}
    Device Status Should Include    one-10    index=${10}    state=running

Every Message Of A Sharded Fleet Arrives And The Series Adds Up
    [Documentation]    The suite's receiver gets every message of every shard; the per-second rows add up to the
    ...    summed stats.
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=${DEVICES}    name=all    shards=${SHARDS}
    Message Rate Should Be    ${fleet}    at_least=40    at_most=80    window=2s
    Stop Fleet    ${fleet}
    Telemetry Should Be Received From Fleet    ${fleet}    timeout=10s
    ${rows} =    Get Fleet Time Series    ${fleet}
    ${stats} =    Get Fleet Stats    ${fleet}
    ${sent} =    Evaluate    sum(row['sent'] for row in $rows)
    Should Be Equal As Integers    ${sent}    ${stats}[messagesSent]

Drop Devices Chooses Over The Whole Sharded Fleet
    [Documentation]    A seeded dropout of 4 devices drops the same 4 as it would in a plain fleet, spread over the
    ...    shards; they come back with Reconnect Devices.
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=${DEVICES}    name=drop    shards=${SHARDS}
    ${dropped} =    Drop Devices    ${fleet}    strategy=immediate    count=4    seed=5
    Wait Until Dropout Is Complete    ${fleet}
    Devices In State Should Be    ${fleet}    dropped    4
    Connected Devices Should Be    ${fleet}    8    timeout=5s
    ${back} =    Reconnect Devices    ${fleet}
    Should Be Equal    ${{ sorted($back) }}    ${{ sorted($dropped) }}
    Wait Until Fleet Is Running    ${fleet}

A Network Fault Acts On Every Shard
    [Documentation]    One fault name for the whole fleet, listed once, removed from every shard.
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=${DEVICES}    name=net    shards=${SHARDS}
    ${fault} =    Add Network Fault    ${fleet}    latency    latency=20ms    count=5    seed=2
    ${faults} =    Get Network Faults    ${fleet}
    Length Should Be    ${faults}    1
    Should Be Equal    ${faults}[0][name]    ${fault}
    Clear Network Faults    ${fleet}
    ${faults} =    Get Network Faults    ${fleet}
    Should Be Empty    ${faults}

Bad Shard Counts Fail Before Anything Starts
    [Documentation]    No shards, or more shards than devices, fail naming the value; a fault keyword that does
    ...    not act on sharded fleets says so.
    VAR    ${none}    ${0}
    Run Keyword And Expect Error    Create Fleet*shards must be a whole number >= 1, got 0.
    ...    Create Local Fleet    acceptance-sensor    count=2    name=bad    shards=${none}
    Run Keyword And Expect Error    Create Fleet*3 shards for 2 devices*
    ...    Create Local Fleet    acceptance-sensor    count=2    name=bad    shards=${SHARDS}
    ${fleet} =    Start Local Fleet    acceptance-sensor    count=4    name=part    shards=2
    Run Keyword And Expect Error    *Fleet 'part' is sharded: this keyword does not act on sharded fleets yet*
    ...    Partition Devices    ${fleet}    count=1
    ${fleets} =    Get Fleets
    Should Be Equal    ${fleets}    ${{ ['part'] }}
