"""Why the Xception peers' OpenVINO INT8 stays near 97 % agreement: every NNCF scheme, one table.

    python benchmarks/peer_int8_schemes.py [--peer mini|big] [--accuracy-control] [--qat EPOCHS]

Exports the peer's fp32 IR through the project's own path, then quantizes it with NNCF under
each scheme (model type, leading convolutions kept fp32, activation ranges, bias correction,
preset) on the same 600 FER2013Train calibration faces as ``int8_agreement.py --export-peers``,
and measures top-1 agreement with fp32 on FER2013Valid. With ``--accuracy-control``, NNCF's
accuracy-controlled quantization is also run, scored on agreement with fp32 instead of accuracy
(first half of FER2013Valid; the second half checks it), and the table records how many
quantized operations it had to return to fp32 to reach 99 %. With ``--qat``, NNCF's
quantization-aware training is tried too: the peer's torch module quantized by NNCF (the same
calibration faces), then its weights and quantizer scales fine-tuned for EPOCHS passes over 2,000
other FER2013Train faces (mirrored at random) to match the fp32 model's softened scores, agreement
measured on the simulated INT8 model after each pass (an upper bound for any file made from it).
Writes benchmarks/results/peer_int8_schemes.json (CPU flags, commit, date inside).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from motivnet_edge.machine import machine_info
from common import ROOT, SHARED, fer_calibration, write_result  # noqa: E402  (benchmarks/ is the script folder)

PEERS = {"mini": "fer2013_mini_XCEPTION.102-0.66.hdf5", "big": "fer2013_big_XCEPTION.54-0.66.hdf5"}
TARGET = 0.99
#: Accuracy control's bound on the fit half: the held-out half agrees about half a point less.
MARGIN = 0.004


def schemes(convs: list[str]):
    """(name, nncf.quantize keyword arguments) for each scheme tried."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet as Ranges

    def fp32(n):
        return nncf.IgnoredScope(names=convs[:n])

    minmax = AdvancedQuantizationParameters(activations_range_estimator_params=Ranges.MINMAX)
    return [
        ("CNN settings, every convolution INT8", {}),
        ("CNN settings, full bias correction", dict(fast_bias_correction=False)),
        ("CNN settings, 2 leading convolutions fp32", dict(ignored_scope=fp32(2))),
        ("CNN settings, 2 fp32, full bias correction", dict(ignored_scope=fp32(2), fast_bias_correction=False)),
        ("CNN settings, 2 fp32, min-max ranges", dict(ignored_scope=fp32(2), advanced_parameters=minmax)),
        ("CNN settings, 2 fp32, mixed preset", dict(ignored_scope=fp32(2), preset=nncf.QuantizationPreset.MIXED)),
        ("CNN settings, 4 leading convolutions fp32", dict(ignored_scope=fp32(4))),
        ("transformer settings, 2 fp32 (export's first rung)",
         dict(ignored_scope=fp32(2), model_type=nncf.ModelType.TRANSFORMER)),
    ]


def qat_curve(src, calib: list[np.ndarray], train_x: np.ndarray, x: np.ndarray, reference: np.ndarray,
              epochs: int, lr: float = 1e-4, temperature: float = 2.0) -> list[dict]:
    """Top-1 agreement with fp32 of NNCF's fake-quantized torch model, before and after each
    pass of fine-tuning it towards the fp32 scores (KL divergence at ``temperature``)."""
    import copy

    import nncf
    import torch
    import torch.nn.functional as F

    fp32 = src.model.eval()
    q = nncf.quantize(copy.deepcopy(fp32), nncf.Dataset([torch.from_numpy(b) for b in calib]), subset_size=512)
    trainable = [p for n, p in q.named_parameters()  # weights and scales, not NNCF's integer settings
                 if p.is_floating_point() and not n.endswith(("_num_bits", "signed_tensor", "_level_low",
                                                              "_level_high", "enabled"))]
    for p in trainable:
        p.requires_grad_(True)
    opt = torch.optim.Adam(trainable, lr=lr)
    xt, gen = torch.from_numpy(train_x), torch.Generator().manual_seed(0)

    def agreement() -> float:
        with torch.no_grad():
            pred = torch.cat([q(torch.from_numpy(x[i:i + 256])) for i in range(0, len(x), 256)]).argmax(1)
        return round(float((pred.numpy() == reference).mean()), 4)

    curve = [{"epoch": 0, "agreement": agreement()}]
    # torch 2.13's oneDNN convolution backward crashed the process (double free) on the peer's
    # graph; the native kernels train it.
    with torch.backends.mkldnn.flags(enabled=False):
        for epoch in range(1, epochs + 1):
            t = time.perf_counter()
            for idx in torch.randperm(len(xt), generator=gen).split(64):
                xb = xt[idx]
                flip = torch.rand(len(idx), generator=gen) < 0.5
                xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
                with torch.no_grad():
                    target = F.log_softmax(fp32(xb) / temperature, 1)
                loss = F.kl_div(F.log_softmax(q(xb) / temperature, 1), target, log_target=True, reduction="batchmean")
                opt.zero_grad()
                loss.backward()
                opt.step()
            curve.append({"epoch": epoch, "agreement": agreement(), "seconds": round(time.perf_counter() - t, 1)})
            print(f"QAT epoch {epoch}: {curve[-1]['agreement']:.2%}", flush=True)
    return curve


def _fake_quantize_ops(model) -> int:
    """Quantized operations left in an NNCF-quantized OpenVINO model."""
    return sum(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peer", choices=sorted(PEERS), default="mini")
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--accuracy-control", action="store_true", help="also run NNCF's accuracy control on agreement")
    ap.add_argument("--qat", type=int, default=0, metavar="EPOCHS", help="also try quantization-aware training")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "peer_int8_schemes.json")
    args = ap.parse_args()
    logging.getLogger("nncf").setLevel(logging.WARNING)
    import nncf
    import openvino as ov

    from motivnet_edge.datasets.readers import read_dataset
    from motivnet_export.exporter import export
    from motivnet_export.int8 import predictor, prepare_data, top1
    from motivnet_export.sources import load_source
    from motivnet_edge.preprocess import faces_to_tensor

    keras = args.shared / "models" / "xception_fer2013" / PEERS[args.peer]
    src = load_source(keras)
    with tempfile.TemporaryDirectory() as tmp:
        calib_dir = fer_calibration(args.shared, Path(tmp) / "calib")
        pkg = export(keras, Path(tmp) / "pkg", formats=("openvino",), latency=False)
        calib = read_dataset(calib_dir, labels=src.labels, label_source="ferplus")
        val = read_dataset(args.shared / "data" / "ferplus" / "FER2013Valid", labels=src.labels,
                           label_source="fer2013")
        data = prepare_data(calib, src.preprocessing, val_faces=val, labels=src.labels)
        model = ov.Core().read_model(str(pkg / "openvino" / "model.xml"))
        x = data.agree_x
        reference = predictor(model)(x)
        convs = [op.get_friendly_name() for op in model.get_ordered_ops()
                 if op.get_type_name() in ("Convolution", "GroupConvolution")]
        rows, fake_quantize = [], {}
        for name, kwargs in schemes(convs):
            t = time.perf_counter()
            q = nncf.quantize(model.clone(), nncf.Dataset(data.calib), subset_size=512, **kwargs)
            agreement = float((predictor(q)(x) == reference).mean())
            rows.append({"scheme": name, "agreement": round(agreement, 4),
                         "seconds": round(time.perf_counter() - t, 1)})
            fake_quantize[name] = _fake_quantize_ops(q)
            print(f"{name:52s} {agreement:.2%}", flush=True)
        result = {"machine": machine_info(), "peer": PEERS[args.peer], "faces": int(len(x)),
                  "faces_set": "FER2013Valid", "calibration": "600 FER2013Train faces", "rows": rows}
        if args.accuracy_control:
            half = len(x) // 2
            items = [(x[i:i + 1], int(reference[i])) for i in range(half)]

            def agree(compiled, batch) -> float:
                batch = list(batch)
                xb = np.concatenate([a for a, _ in batch])
                return float((top1(lambda b: compiled(b)[0], xb) == np.array([y for _, y in batch])).mean())

            q = nncf.quantize_with_accuracy_control(
                model.clone(), nncf.Dataset(data.calib), nncf.Dataset(items), agree, max_drop=1 - TARGET - MARGIN,
                drop_type=nncf.DropType.ABSOLUTE, subset_size=512)
            pred = predictor(q)(x)
            result["accuracy_control_on_agreement"] = {
                "agreement_fit_half": round(float((pred[:half] == reference[:half]).mean()), 4),
                "agreement_held_out_half": round(float((pred[half:] == reference[half:]).mean()), 4),
                "fake_quantize_ops_left": _fake_quantize_ops(q),
                # accuracy control starts from NNCF's default (CNN) quantization: the first row
                "fake_quantize_ops_without_control": fake_quantize[rows[0]["scheme"]]}
            print(result["accuracy_control_on_agreement"])
        if args.qat:
            train = read_dataset(args.shared / "data" / "ferplus" / "FER2013Train", labels=src.labels,
                                 label_source="fer2013")
            calibration = {p.name for p in calib_dir.iterdir()}
            rest = [i for i, f in enumerate(train.files) if Path(f).name not in calibration]
            pick = np.sort(np.random.default_rng(0).permutation(rest)[:2000])
            train_x = faces_to_tensor([train.images[i] for i in pick], src.preprocessing)
            result["qat"] = {"train_faces": "2000 FER2013Train faces (not the calibration ones), mirrored at random",
                             "loss": "KL divergence to the fp32 scores at temperature 2", "lr": 1e-4, "batch": 64,
                             "agreement_by_epoch": qat_curve(src, data.calib, train_x, x, reference, args.qat)}
    write_result(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
