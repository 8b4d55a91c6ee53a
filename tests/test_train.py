"""The training loop: it learns, records what the plots need, and evaluates in eval mode."""

import pytest
import torch
from torch import nn

from bncourse.data import DeviceLoader, load_digits
from bncourse.models import BNPaperMLP, SmallCNN
from bncourse.train import History, TrainConfig, evaluate, train


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_does_the_bn_mlp_learn_digits_in_a_few_hundred_steps(digits):
    torch.manual_seed(0)
    model = BNPaperMLP(64, 10, batch_norm=True)
    config = TrainConfig(steps=200, batch_size=60, lr=0.5, momentum=0.0, eval_every=100, progress=False)
    h = train(model, digits.train, digits.test, config)
    assert h.eval_steps == [0, 100, 200]
    assert h.test_acc[0] < 0.3 and h.final_test_acc > 0.9
    assert len(h.steps) == len(h.train_loss) == len(h.train_acc) == 200
    assert h.train_loss[-1] < h.train_loss[0]
    assert h.images_seen == 8 * 1438 + 8 * 60 and h.images_per_s > 0  # 8 epochs of 24 batches, 8 more steps


def test_are_per_epoch_records_one_per_epoch(digits):
    torch.manual_seed(0)
    h = train(BNPaperMLP(64, 10), digits.train, digits.test, TrainConfig(epochs=2, batch_size=500, progress=False))
    assert len(h.epoch_train_loss) == len(h.epoch_test_acc) == 2 and h.eval_steps == [3, 6]
    assert len(h.steps) == 6


def test_does_evaluation_use_eval_mode_and_restore_the_mode(digits):
    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(64, 10)
            self.modes = []

        def forward(self, x):
            self.modes.append(self.training)
            return self.lin(x.flatten(1))

    m = Spy().train()
    evaluate(m, digits.test)
    assert m.modes and not any(m.modes) and m.training
    m.eval()
    evaluate(m, digits.test)
    assert not m.training


def test_do_records_run_in_eval_mode_at_every_evaluation(digits):
    torch.manual_seed(0)
    model = BNPaperMLP(64, 10, batch_norm=True)
    x_fixed = digits.X_test[:30]
    seen = []

    def record(m):
        seen.append(m.training)
        return m.forward_with_preact(x_fixed)[1][:, 0].clone()

    config = TrainConfig(steps=50, batch_size=60, eval_every=25, progress=False, record=record)
    h = train(model, digits.train, digits.test, config)
    assert len(h.records) == len(h.eval_steps) == 3 and h.records[0].shape == (30,)
    assert seen == [False, False, False] and model.training


def test_does_training_repeat_exactly_with_the_same_seed(digits):
    def run():
        torch.manual_seed(1)
        return train(BNPaperMLP(64, 10), digits.train, None, TrainConfig(steps=30, batch_size=60, progress=False))

    assert run().train_loss == run().train_loss


def test_does_a_cnn_train_from_a_device_loader_with_augmentation(digits):
    torch.manual_seed(0)
    loader = DeviceLoader(*digits.train, batch_size=128, augment=True, padding=1, flip=False)
    h = train(SmallCNN(1, 10, widths=(8, 16)), loader, digits.test,
              TrainConfig(steps=5, lr=0.05, progress=False, schedule="onecycle"))
    assert len(h.train_loss) == 5 and len(h.test_acc) == 1


def test_is_a_diverging_run_flagged_and_stopped(digits):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    h = train(model, digits.train, None, TrainConfig(epochs=3, batch_size=256, lr=1e37, momentum=0.9, progress=False))
    assert h.diverged and len(h.epoch_train_loss) < 3


def test_are_unknown_options_rejected_by_name(digits):
    with pytest.raises(ValueError, match="optimizer"):
        train(BNPaperMLP(64, 10), digits.train, None, TrainConfig(steps=1, optimizer="lion", progress=False))
    with pytest.raises(ValueError, match="schedule"):
        train(BNPaperMLP(64, 10), digits.train, None, TrainConfig(steps=1, schedule="cosine", progress=False))


def test_does_fast_mode_shorten_the_default_epochs(monkeypatch):
    monkeypatch.setenv("BNCOURSE_FAST", "1")
    fast = TrainConfig().epochs
    monkeypatch.setenv("BNCOURSE_FAST", "0")
    assert TrainConfig().epochs > fast


def test_does_the_gpu_fast_path_run_through_the_loop_on_the_cpu(digits, monkeypatch):
    """The CUDA switches (bf16 autocast + channels_last), exercised with CPU autocast."""
    from bncourse import train as T
    from bncourse.device import FastPath

    monkeypatch.setattr(T, "fast_path", lambda device, enabled=True: FastPath("cpu", torch.bfloat16, True))
    torch.manual_seed(0)
    model = SmallCNN(1, 10, widths=(8, 16))
    h = train(model, digits.train, digits.test, TrainConfig(steps=20, batch_size=64, lr=0.05, progress=False))
    assert model.features[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(map(lambda v: v == v, h.train_loss)) and 0 <= h.final_test_acc <= 1
    assert model.features[0][0].weight.dtype == torch.float32  # autocast keeps the master weights in fp32


def test_does_recompute_bn_statistics_give_the_equal_weight_average_of_the_batches():
    from bncourse.train import recompute_bn_statistics

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).eval()
    bn = model[1]
    bn.running_mean.fill_(9.0), bn.num_batches_tracked.fill_(50)
    batches = [torch.randn(6, 3) * (i + 1) for i in range(3)]
    weight = model[0].weight.detach().clone()
    recompute_bn_statistics(model, batches)
    with torch.no_grad():
        h = [model[0](x) for x in batches]
    torch.testing.assert_close(bn.running_mean, torch.stack([z.mean(0) for z in h]).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack([z.var(0) for z in h]).mean(0))  # unbiased, as PyTorch
    assert not model.training and bn.momentum == 0.1 and torch.equal(model[0].weight, weight)


def test_does_flip_evaluation_average_the_image_and_its_mirror():
    class LeftRight(nn.Module):
        """Logit 0 = mean of the left half, logit 1 = mean of the right half."""

        def __init__(self):
            super().__init__()
            self.dummy = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.stack([x[..., :2].mean((1, 2, 3)), x[..., 2:].mean((1, 2, 3))], 1)

    x = torch.zeros(4, 1, 4, 4)
    x[..., 2:] = 1.0  # bright on the right: class 1 without flip, a tie with flip
    y = torch.ones(4, dtype=torch.long)
    loss, acc = evaluate(LeftRight(), (x, y))
    loss_flip, _ = evaluate(LeftRight(), (x, y), flip=True)
    assert acc == 1.0 and abs(loss_flip - torch.log(torch.tensor(2.0)).item()) < 1e-6 and loss < loss_flip


def test_does_fp16_autocast_train_through_a_grad_scaler(digits, monkeypatch):
    """A GPU older than Ampere gets fp16 autocast: the loop must scale the loss (CPU autocast stands in)."""
    from bncourse import train as T
    from bncourse.device import FastPath

    steps = []

    class CountingScaler(torch.amp.GradScaler):
        def step(self, optimizer, *args, **kwargs):
            steps.append(self.get_scale())
            return super().step(optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.amp, "GradScaler", CountingScaler)
    monkeypatch.setattr(T, "fast_path", lambda device, enabled=True: FastPath("cpu", torch.float16, True))
    torch.manual_seed(0)
    h = train(SmallCNN(1, 10, widths=(8, 16)), digits.train, digits.test,
              TrainConfig(steps=6, batch_size=64, lr=0.05, progress=False))
    assert len(steps) == 6 and steps[0] == 65536.0  # the scaler's initial scale: it was used
    assert all(v == v for v in h.train_loss)


def test_does_the_loop_time_the_device_it_trains_on(digits, monkeypatch):
    """The clock is read only after waiting for the device (cuda, mps: asynchronous; a no-op here)."""
    from bncourse import train as T

    waited = []
    monkeypatch.setattr(T, "synchronize", lambda d: waited.append(torch.device(d)))
    train(BNPaperMLP(64, 10), digits.train, None, TrainConfig(steps=3, batch_size=600, progress=False))
    assert waited and set(waited) == {torch.device("cpu")}


class _FakeDeviceTensor:
    """A tensor that says it lives on a GPU; records how it is copied."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.copies = []

    def to(self, device, non_blocking=False):
        self.copies.append((torch.device(device), non_blocking))
        return torch.zeros(1)


def test_is_a_copy_to_the_host_never_asynchronous():
    """A non-blocking device-to-host copy returns before the data arrive: the CPU would read it early."""
    from bncourse.train import to_device

    gpu_tensor = _FakeDeviceTensor("cuda:0")
    to_device(gpu_tensor, "cpu")
    assert gpu_tensor.copies == [(torch.device("cpu"), False)]
    host = torch.ones(2)
    assert to_device(host, "cpu") is host


def test_does_warm_up_leave_the_model_and_the_random_state_as_they_were(digits):
    from bncourse.train import warm_up

    torch.manual_seed(0)
    model = SmallCNN(1, 10, widths=(4, 8))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loader = DeviceLoader(*digits.train, batch_size=64, seed=3)
    state, loader_state = torch.get_rng_state(), loader.generator.get_state()
    seconds = warm_up(model, loader, digits.test, TrainConfig(batch_size=64, progress=False), steps=2)
    assert seconds > 0 and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), state) and torch.equal(loader.generator.get_state(), loader_state)
