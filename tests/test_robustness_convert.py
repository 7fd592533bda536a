"""A PyTorch checkpoint damaged after it was written (bytes changed inside a tensor, or inside the
pickle) is refused with one line: torch.load itself would load wrong weights without a word."""
import zipfile

import pytest

from test_convert import _cli_error, _modelscope_dir

pytestmark = pytest.mark.torch


def _flip_member(path, suffix):
    """Overwrite 8 bytes in the middle of the zip member whose name ends with ``suffix``."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if i.filename.endswith(suffix)), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    # local header: 30 bytes + name + extra field, then the (stored, uncompressed) member data
    name_len = int.from_bytes(data[info.header_offset + 26: info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28: info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    data[start:start + 8] = bytes(255 - b for b in data[start:start + 8])
    path.write_bytes(bytes(data))
    return info.filename


def test_damaged_tensor_bytes_are_refused(tmp_path, capsys):
    src, _ = _modelscope_dir(tmp_path)
    member = _flip_member(src / "pytorch_model.bin", "")  # the largest member: a tensor's bytes
    assert "/data/" in member
    err = _cli_error(capsys, str(src), str(tmp_path / "out"))
    assert err == (f"error: {src / 'pytorch_model.bin'}: corrupt: the checksum of {member} does not match "
                   "(damaged after it was written: copy or download it again)")
    assert not (tmp_path / "out").exists()


def test_damaged_pickle_is_refused(tmp_path, capsys):
    src, _ = _modelscope_dir(tmp_path)
    member = _flip_member(src / "pytorch_model.bin", "data.pkl")
    err = _cli_error(capsys, str(src), str(tmp_path / "out"))
    assert f"corrupt: the checksum of {member} does not match" in err
