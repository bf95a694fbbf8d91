"""The images' org.opencontainers.image.licenses label: an SPDX expression of our code and what each image carries."""

from __future__ import annotations

import re

import pytest
from packaging.licenses import canonicalize_license_expression

from dsv4_images import matrix, render
from dsv4_images.errors import UserError
from tests.support.local_files import broken_matrix

M = matrix.load()
FILES = render.render_all(M)


@pytest.mark.parametrize("target", list(M.targets))
def test_the_license_label_is_an_spdx_expression_of_what_the_image_carries(target):
    """Catches: `licenses="MIT"` on an image carrying Apache-2.0 vLLM and NVIDIA-licensed CUDA parts."""
    t = M.resolve(target)
    (label,) = re.findall(r'org\.opencontainers\.image\.licenses="([^"]+)"', FILES[t.dockerfile])
    assert label == canonicalize_license_expression(label) == t.license_expression(M.project.licenses)
    terms = set(label.split(" AND "))
    assert {"MIT", "Apache-2.0", "BSD-3-Clause"} <= terms
    assert any(term.startswith("LicenseRef-NVIDIA") for term in terms)  # CUDA wheels: also the cpu image's torch


@pytest.mark.parametrize("old,new,message", [
    ('licenses = "MIT"', 'licenses = "MIT-ish"', "project.licenses: not an SPDX license expression"),
    ('"GPL-3.0-or-later WITH GCC-exception-3.1", "LicenseRef-NVIDIA-CUDA-EULA"]',
     '"GPL-3.0-or-later WITH GCC-exception-3.1", "NVIDIA EULA"]', "targets.sm100.licenses: not an SPDX license expression"),
])
def test_a_license_that_is_not_spdx_is_one_line_naming_the_key(tmp_path, old, new, message):
    with pytest.raises(UserError) as exc:
        matrix.load(broken_matrix(tmp_path, old, new))
    assert message in str(exc.value) and "\n" not in str(exc.value)
