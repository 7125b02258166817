"""`facenet-vggface2`: FaceNet's InceptionResnetV1 trained on VGGFace2 (facenet-pytorch's port of David
Sandberg's model), 512-d. The weights are not in the facenet-pytorch wheel (it downloads them at run time), so
they go through facedata's resolver like every other model: models dir, user cache, torch's checkpoint cache
(where facenet-pytorch itself keeps them), or the release URL with a sha256 check; loaded with
`weights_only=True`.
"""

from __future__ import annotations

from facedata.embed import TorchEmbedder


class FacenetEmbedder(TorchEmbedder):
    name = "facenet-vggface2"
    dim = 512
    template = "facenet160"
    crop_size = 160

    def __init__(self, device: str = "auto", flip: bool = False, weights: str | None = None) -> None:
        import torch

        from facedata import models
        from facedata.torchvision_compat import ensure_torchvision

        super().__init__(device, flip)
        path = weights or models.locate_file(self.name)
        self.version = models.get_spec(self.name).version
        ensure_torchvision()
        from facenet_pytorch import InceptionResnetV1

        net = InceptionResnetV1(pretrained=None, classify=False)
        state = torch.load(path, map_location="cpu", weights_only=True)
        # The released file also holds the VGGFace2 classifier (`logits.*`), which embedding does not use.
        state = {k: v for k, v in state.items() if not k.startswith("logits.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        if [k for k in missing if not k.startswith("logits.")] or unexpected:
            raise ValueError(
                f"{path} is not a FaceNet InceptionResnetV1 state dict ({missing[:3]}, {unexpected[:3]})"
            )
        self.net = net.eval().to(self.device)

    def _forward(self, x):
        # facenet-pytorch's fixed_image_standardization: (pixel - 127.5) / 128, channels first.
        return self.net((x.permute(0, 3, 1, 2).float() - 127.5) / 128.0)
