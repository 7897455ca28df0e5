"""The ``iotix`` console command: check device models, preview what their devices send, make certificates.

``iotix validate [PATH...] [--data-dir DIR]...``
    Validate model files and folders (folders recursively, as :func:`iotix.model.load_models` reads them);
    no PATH: ``DEVICE_MODEL_PATH``, else ``models/``. One ``ok`` line per valid model (with a note for a
    replay file that is checked only when a fleet is created), the full error of every invalid file; exit 0
    when all are valid, 1 when any is not, 2 for a usage error. ``--data-dir`` adds a data root for replay
    files (as ``IOTIX_DATA_PATH`` and ``data_dir=`` of ``Load Device Models``). Scenario files among the
    paths (``iotix validate models models/scenarios``) are checked too, their model ids looked up among the
    models of the same command.

``iotix sample MODEL [--count N] [--seed S] [--device-id ID] [--start-ts MS] [--models DIR] [--data-dir DIR]...``
    Print the payloads one device of the model would send, one JSON object per line, in send order, on a
    simulated clock: the same arguments always print the same bytes.

``iotix certs --ca-dir CA [--out DIR] (--count N [--id-pattern P] | --ids ID,...) [--expired] [--days D]
[--server NAME]...``
    Sign one client certificate per device with the CA in ``CA`` (``ca.pem``, ``ca.key``; created unless
    there) and write ``DIR/certs/<id>.pem``, ``DIR/certs/<id>.key`` (mode 0600) and ``DIR/certs/ca.pem``: the
    layout of the ``secure-env-sensor`` model's ``connection.tls``, so ``Create Fleet ... tls_dir=DIR`` finds
    them. ``--server`` also writes ``DIR/server.pem`` and ``DIR/server.key`` for a broker with those names.

Problems are reported as messages, never as tracebacks.
"""

from __future__ import annotations

import argparse
import base64
import heapq
import ipaddress
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from iotix import __version__
from iotix.errors import ConfigurationError, IoTixError, NotFoundError
from iotix.model.errors import ROOT, ModelError, ModelNotFoundError
from iotix.model.loader import (
    DEFAULT_MODEL_PATH,
    MODEL_SUFFIXES,
    _read_document,
    default_model_path,
    load_model,
    missing_default_path_message,
    model_files,
    pending_data_files,
)
from iotix.model.types import DeviceModel

__all__ = ["DEFAULT_START_TS", "device_ids", "main", "sample_payloads"]

#: ``ts`` of the first reading printed by ``iotix sample`` unless ``--start-ts`` is given (2023-11-14 22:13:20
#: UTC): a fixed value keeps the output reproducible.
DEFAULT_START_TS = 1_700_000_000_000

#: Where ``iotix sample`` looks for a model given by id, unless ``--models`` is given and ``DEVICE_MODEL_PATH``
#: is not set (see :func:`iotix.model.loader.default_model_path`).
DEFAULT_MODELS_DIR = DEFAULT_MODEL_PATH

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def _non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iotix",
        description="IoTix: check device models, preview the telemetry their devices send, make test certificates.",
    )
    parser.add_argument("--version", action="version", version=f"iotix {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    validate = commands.add_parser(
        "validate",
        help="validate model files and folders",
        description=(
            "Validate device model files (.json, .yaml, .yml). A folder is searched recursively, skipping "
            "'schema', 'data' and 'scenarios' folders and names starting with '.' or '_'; two files of one folder "
            "defining the same id are an error. Scenario files (a 'fleets' list, no 'telemetry') among the paths "
            "are checked too, their model ids looked up among the models of the same command "
            "(iotix validate models models/scenarios). Exit status: 0 all valid, 1 something invalid or missing, "
            "2 usage error."
        ),
    )
    validate.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="a model file or a folder of models (default: $DEVICE_MODEL_PATH, else ./models)",
    )
    validate.add_argument(
        "--data-dir",
        metavar="DIR",
        action="append",
        default=[],
        help="a folder replay data files may lie under besides the model's folder (repeatable; "
        "IOTIX_DATA_PATH is read too)",
    )
    validate.add_argument("-q", "--quiet", action="store_true", help="print only the errors")

    sample = commands.add_parser(
        "sample",
        help="print the payloads a device of a model would send",
        description=(
            "Print the first N payloads one device of MODEL would send, one JSON object per line, in send "
            "order on a simulated clock (every telemetry group sends at t=0, then every intervalMs). "
            "JSON payloads are printed as sent; CBOR payloads decoded, with binary values in base64; raw "
            'payloads as {"deviceId", "seq", "ts", "raw": <base64>}. The same arguments always print the '
            "same output."
        ),
    )
    sample.add_argument("model", metavar="MODEL", help="a model file, or the id of a model in the models folder")
    sample.add_argument("-n", "--count", type=_non_negative_int, default=5, help="payloads to print (default 5)")
    sample.add_argument("--seed", default="0", help="seed of the generated values (default 0)")
    sample.add_argument("--device-id", metavar="ID", help="device id (default '<model id>-0')")
    sample.add_argument(
        "--start-ts",
        metavar="MS",
        type=_non_negative_int,
        default=DEFAULT_START_TS,
        help=f"epoch milliseconds of the first reading (default {DEFAULT_START_TS})",
    )
    sample.add_argument(
        "--models",
        metavar="DIR",
        type=Path,
        default=None,
        help="folder searched for a MODEL given by id (default: $DEVICE_MODEL_PATH, else ./models)",
    )
    sample.add_argument(
        "--data-dir",
        metavar="DIR",
        action="append",
        default=[],
        help="a folder replay data files may lie under besides the model's folder (repeatable)",
    )

    certs = commands.add_parser(
        "certs",
        help="make a test CA and one client certificate per device (mutual TLS)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Sign one client certificate per device (subject common name = the device id, EC P-256,\n"
            "valid --days days) with the CA in --ca-dir (ca.pem and ca.key, created unless there), and write\n"
            "\n"
            "  OUT/certs/<id>.pem   the device's certificate\n"
            "  OUT/certs/<id>.key   its private key (mode 0600)\n"
            "  OUT/certs/ca.pem     a copy of the CA certificate\n"
            "\n"
            "That is the layout of the secure-env-sensor model (certFile certs/${deviceId}.pem, keyFile\n"
            "certs/${deviceId}.key, caFile certs/ca.pem): create its fleet with the same ids and tls_dir=OUT,\n"
            "and give the broker the same CA (Start Local MQTT Broker  tls=True  ca_dir=CA). Certificates of\n"
            "the same ids are replaced. Exit status: 0 done, 1 failed, 2 usage error."
        ),
        epilog=(
            "example:\n"
            "  iotix certs --ca-dir /tmp/ca --out /tmp/fleet --count 2000 --id-pattern env-{index:04d}\n"
            "  then: Create Fleet  secure-env-sensor  count=2000  id_pattern=env-{index:04d}  tls_dir=/tmp/fleet"
        ),
    )
    certs.add_argument("--ca-dir", metavar="CA", type=Path, required=True, help="folder of the CA (created if needed)")
    certs.add_argument("--out", metavar="OUT", type=Path, default=Path(), help="output folder (default .)")
    which = certs.add_mutually_exclusive_group(required=True)
    which.add_argument("-n", "--count", type=_non_negative_int, help="number of devices, ids from --id-pattern")
    which.add_argument("--ids", metavar="ID,...", help="comma-separated device ids")
    certs.add_argument(
        "--id-pattern",
        metavar="P",
        default="device-{index}",
        help="device ids for --count: {index} 0-based, {n} 1-based, format specs work (default device-{index}; "
        "use the id_pattern of Create Fleet)",
    )
    certs.add_argument("--days", type=_positive_int, default=365, help="validity in days (default 365)")
    certs.add_argument("--expired", action="store_true", help="make certificates that expired yesterday (tests)")
    certs.add_argument(
        "--server",
        metavar="NAME",
        action="append",
        default=[],
        help="also write OUT/server.pem and OUT/server.key for this DNS name or IP address (repeatable)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``iotix`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, usage errors: argparse has printed what it had to
        code = exit_.code
        if code is None:
            return EXIT_OK
        return code if isinstance(code, int) else EXIT_USAGE
    if args.command == "validate":
        if not args.paths and not default_model_path().exists():
            print(ModelNotFoundError(default_model_path(), [(ROOT, missing_default_path_message())]), file=sys.stdout)
            return EXIT_FAILED
        paths = args.paths or [str(default_model_path())]
        return _validate_command(paths, quiet=args.quiet, out=sys.stdout, data_dirs=args.data_dir)
    if args.command == "certs":
        return _certs_command(args, out=sys.stdout, err=sys.stderr)
    return _sample_command(args, out=sys.stdout, err=sys.stderr)


# --------------------------------------------------------------------------------------------------
# iotix validate
# --------------------------------------------------------------------------------------------------


@dataclass
class _Tally:
    valid: int = 0
    invalid: int = 0
    #: Valid models of the command, by id: the models scenario files may name by id.
    models: dict[str, DeviceModel] = field(default_factory=dict)
    #: Scenario files met on the way, checked once every model of the command is known.
    scenarios: list[Path] = field(default_factory=list)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _describe(model: DeviceModel) -> str:
    return f"id {model.id}, {model.protocol}, {_plural(len(model.telemetry), 'field')}"


def _load_for_report(path: Path, data_dirs: Sequence[str] = ()) -> DeviceModel | ModelError:
    """The model in ``path``, or the error saying why it cannot be loaded (never raises)."""
    try:
        return load_model(path, data_dirs)
    except ModelError as err:
        return err
    except Exception as err:  # a bug in a checker or a custom handler: still a report, not a traceback
        return ModelError(path, [(ROOT, f"unexpected error while loading: {err!r}")])


def _files_of(path: Path) -> list[Path] | ModelError:
    """The model files ``path`` stands for (itself, or those of a folder tree), or why there are none."""
    if not path.exists():
        return ModelNotFoundError(path, [(ROOT, "no such file or folder")])
    if not path.is_dir():
        return [path]
    try:
        files = list(model_files(path))
    except OSError as err:
        return ModelError(path, [(ROOT, f"cannot read the folder: {err.strerror or err}")])
    if not files:
        suffixes = ", ".join(f"*{s}" for s in MODEL_SUFFIXES)
        return ModelNotFoundError(path, [(ROOT, f"no model files ({suffixes}) in this folder")])
    return files


def _validate_path(path: Path, quiet: bool, out: TextIO, tally: _Tally, data_dirs: Sequence[str] = ()) -> None:
    """Report every model file of ``path``; ids defined twice within the path are errors (as in load_models)."""
    files = _files_of(path)
    if isinstance(files, ModelError):
        print(files, file=out)
        tally.invalid += 1
        return
    seen: dict[str, Path] = {}
    for file in files:
        if _is_scenario_file(file):
            tally.scenarios.append(file)
            continue
        result = _load_for_report(file, data_dirs)
        if isinstance(result, DeviceModel) and result.id in seen:
            result = ModelError(
                file, [("id", f"duplicate model id {result.id!r}: already defined in '{seen[result.id]}'")]
            )
        if isinstance(result, ModelError):
            print(result, file=out)
            tally.invalid += 1
            continue
        seen[result.id] = file
        tally.models.setdefault(result.id, result)
        tally.valid += 1
        if not quiet:
            print(f"ok  {file}  ({_describe(result)})", file=out)
            for field_name, data_file in pending_data_files(result):
                print(
                    f"    note: field {field_name} replays '{data_file}', outside the model's folder and every data "
                    "root: it is checked when a fleet is created (--data-dir or IOTIX_DATA_PATH to check it now)",
                    file=out,
                )


def _is_scenario_file(path: Path) -> bool:
    """A scenario rather than a model: a mapping with ``fleets`` and no ``telemetry`` (unreadable: a model)."""
    from iotix.model.scenario import looks_like_scenario

    try:
        return looks_like_scenario(_read_document(path))
    except ModelError:
        return False


def _validate_scenarios(quiet: bool, out: TextIO, tally: _Tally) -> None:
    """Check every scenario file met, its models resolved among the valid models of the command (or files)."""
    from iotix.fleet.scenario import plan_fleets
    from iotix.model.loader import ModelRegistry
    from iotix.model.scenario import ScenarioError, load_scenario

    for file in tally.scenarios:
        registry = ModelRegistry()
        for model in tally.models.values():
            registry.add(model)
        try:
            scenario = load_scenario(file)
            plans = plan_fleets(scenario, registry)
        except ScenarioError as err:
            print(err, file=out)
            if not tally.models and any(path.endswith(".model") for path, _ in err.problems):
                print(f"  (model ids are looked up in the paths given: iotix validate MODELS-FOLDER {file})", file=out)
            tally.invalid += 1
            continue
        except IoTixError as err:
            print(f"Scenario '{file}' is invalid: {err}", file=out)
            tally.invalid += 1
            continue
        tally.valid += 1
        if not quiet:
            devices = sum(len(plan.device_ids) for plan in plans)
            print(
                f"ok  {file}  (scenario {scenario.name}, {_plural(len(plans), 'fleet')}, {_plural(devices, 'device')})",
                file=out,
            )


def _validate_command(paths: Sequence[str], *, quiet: bool, out: TextIO, data_dirs: Sequence[str] = ()) -> int:
    """``iotix validate``: report every path, then a summary line (unless ``quiet``)."""
    tally = _Tally()
    for raw in paths:
        _validate_path(Path(raw), quiet, out, tally, data_dirs)
    _validate_scenarios(quiet, out, tally)
    if not quiet:
        total = tally.valid + tally.invalid
        kinds = [(total - len(tally.scenarios), "model file"), (len(tally.scenarios), "scenario file")]
        checked = " and ".join(_plural(n, word) for n, word in kinds if n) or _plural(0, "model file")
        print(f"{checked} checked: {tally.valid} valid, {tally.invalid} invalid", file=out)
    return EXIT_FAILED if tally.invalid else EXIT_OK


# --------------------------------------------------------------------------------------------------
# iotix sample
# --------------------------------------------------------------------------------------------------


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or Path(text).suffix.lower() in MODEL_SUFFIXES


def _find_model(spec: str, models_dir: Path | None, data_dirs: Sequence[str] = ()) -> DeviceModel:
    """The model in file ``spec``, or the model with id ``spec`` in ``models_dir``.

    Raises :class:`ModelError` (the file's own error, or that of the file named after the id), or
    :class:`NotFoundError` listing the ids there are.
    """
    path = Path(spec)
    if path.is_file() or _looks_like_path(spec):
        return load_model(path, data_dirs)
    if models_dir is None:
        models_dir = default_model_path()
    if not models_dir.is_dir():
        raise NotFoundError(
            f"no model file '{spec}', and no models folder '{models_dir}' to look up a model with this id "
            "(give a model file or --models DIR)"
        )
    files = sorted(model_files(models_dir), key=lambda f: f.stem != spec)  # the file named after the id first
    known: list[str] = []
    broken: list[ModelError] = []
    for file in files:
        try:
            model = load_model(file, data_dirs)
        except ModelError as err:
            if file.stem == spec:  # most likely the model asked for: its problems are the answer
                raise
            broken.append(err)
            continue
        if model.id == spec:
            return model
        known.append(model.id)
    listing = ", ".join(sorted(known)) or "none"
    message = f"no model file '{spec}' and no model with id '{spec}' in '{models_dir}' (ids there: {listing})"
    if broken:
        message += f"; {_plural(len(broken), 'file')} there could not be loaded: " + ", ".join(
            str(err.source) for err in broken
        )
    raise NotFoundError(message)


def _jsonable(value: Any) -> Any:
    """``value`` with every ``bytes`` turned into base64 text (containers copied)."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


def _to_json_line(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _schedule(groups: Sequence[tuple[int, tuple[str, ...]]]) -> Iterator[tuple[int, int]]:
    """``(due_ms, group index)`` of a device's readings, forever, in the order the fleet fires them.

    Every group is due at 0, then every ``interval_ms``; equal due times fire in group order (the fleet's
    scheduler breaks ties by the slot, allocated in group order). Integer milliseconds keep ties exact.
    """
    heap = [(0, index) for index in range(len(groups))]
    heapq.heapify(heap)
    while heap:
        due, index = heapq.heappop(heap)
        yield due, index
        heapq.heappush(heap, (due + groups[index][0], index))


def sample_payloads(
    model: DeviceModel, count: int, *, seed: int | str | None = 0, device_id: str | None = None, start_ts: int = 0
) -> list[str]:
    """The first ``count`` payloads a device of ``model`` sends, as JSON lines (see ``iotix sample --help``).

    The device's logical clock starts at 0 with ``ts = start_ts``; readings are sampled in the fleet's
    order, including groups a raw payload does not send (they advance the device's random stream, as in a
    running fleet, but are not printed and take no ``seq``).
    """
    from iotix.encode import decode_envelope, make_encoder
    from iotix.generate import DeviceValues

    device = device_id if device_id is not None else f"{model.id}-0"
    values = DeviceValues(model, device, seed)
    encode = make_encoder(model)
    groups = values.groups
    fmt = model.payload.format
    raw_field = model.payload.field if fmt == "raw" else None
    sendable = [raw_field is None or raw_field in names for _, names in groups]
    if count and not any(sendable):  # the loader rules this out; do not loop forever if it ever happens
        raise IoTixError(f"model '{model.id}': no telemetry group contains the raw payload field '{raw_field}'")
    lines: list[str] = []
    seq = 0
    schedule = _schedule(groups)
    while len(lines) < count:
        due_ms, index = next(schedule)
        sample = values.sample(groups[index][1], due_ms / 1000.0)
        if not sendable[index]:
            continue
        ts = start_ts + due_ms
        payload = encode(device, seq, ts, sample)
        if fmt == "json":
            lines.append(payload.decode("utf-8"))
        elif fmt == "cbor":
            lines.append(_to_json_line(_jsonable(decode_envelope(payload))))
        else:
            lines.append(_to_json_line({"deviceId": device, "seq": seq, "ts": ts, "raw": _jsonable(payload)}))
        seq += 1
    return lines


def _sample_command(args: argparse.Namespace, *, out: TextIO, err: TextIO) -> int:
    """``iotix sample``: payload lines on ``out``; a model or generator problem on ``err``, exit 1."""
    try:
        model = _find_model(args.model, args.models, args.data_dir)
        lines = sample_payloads(model, args.count, seed=args.seed, device_id=args.device_id, start_ts=args.start_ts)
    except IoTixError as error:  # ModelError, configuration problems of the model or a custom handler
        print(f"iotix sample: {error}", file=err)
        return EXIT_FAILED
    except OSError as error:
        print(f"iotix sample: {error}", file=err)
        return EXIT_FAILED
    except Exception as error:  # a bug in a generator or a custom handler: a message, not a traceback
        print(f"iotix sample: unexpected error: {error!r}", file=err)
        return EXIT_FAILED
    for line in lines:
        print(line, file=out)
    return EXIT_OK


# --------------------------------------------------------------------------------------------------
# iotix certs
# --------------------------------------------------------------------------------------------------


def device_ids(pattern: str, count: int) -> list[str]:
    """``count`` device ids from ``pattern`` (``{index}`` 0-based, ``{n}`` 1-based, format specs allowed).

    Raises :class:`ConfigurationError` for a pattern that does not format, or that gives duplicates.
    """
    try:
        ids = [pattern.format(index=i, n=i + 1) for i in range(count)]
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigurationError(
            f"id pattern '{pattern}' is not usable ({err}); use {{index}}, {{index:04d}} or {{n}}"
        ) from None
    if len(set(ids)) != len(ids):
        raise ConfigurationError(f"id pattern '{pattern}' gives the same id twice: add {{index}}")
    return ids


def _certs_command(args: argparse.Namespace, *, out: TextIO, err: TextIO) -> int:
    """``iotix certs``: one line per thing written on ``out``; a problem on ``err``, exit 1."""
    from iotix.security.certs import (
        DEFAULT_CA_COPY,
        create_device_certificates,
        create_server_certificate,
        default_device_targets,
        load_or_create_ca,
    )

    try:
        if args.ids is not None:
            ids = [i.strip() for i in args.ids.split(",") if i.strip()]
            if len(set(ids)) != len(ids):
                raise ConfigurationError("--ids lists the same id twice")
        else:
            ids = device_ids(args.id_pattern, args.count)
        existed = (args.ca_dir / "ca.pem").exists()
        started = time.perf_counter()
        ca = load_or_create_ca(args.ca_dir)
        print(f"CA: {ca.cert_path} ({'existing' if existed else 'created'}, key {ca.directory / 'ca.key'})", file=out)
        targets = default_device_targets(args.out, ids)
        count = create_device_certificates(
            ca, targets, days=args.days, expired=args.expired, ca_copy=args.out / DEFAULT_CA_COPY
        )
        elapsed = time.perf_counter() - started
        span = f" ({targets[0].cert.name} .. {targets[-1].cert.name})" if targets else ""
        state = "expired " if args.expired else ""
        print(
            f"{count} {state}device certificates{span} and keys in {args.out / 'certs'}, "
            f"CA copy {args.out / DEFAULT_CA_COPY}; {elapsed:.2f} s",
            file=out,
        )
        if args.server:
            ips = [name for name in args.server if _is_ip(name)]
            dns = [name for name in args.server if not _is_ip(name)]
            pair = create_server_certificate(ca, args.out, dns_names=dns, ip_addresses=ips, days=args.days)
            print(f"server certificate {pair.cert} (key {pair.key}) for {', '.join(args.server)}", file=out)
    except IoTixError as error:
        print(f"iotix certs: {error}", file=err)
        return EXIT_FAILED
    except OSError as error:
        print(f"iotix certs: {error}", file=err)
        return EXIT_FAILED
    return EXIT_OK


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
