"""Training a recognizer for the dataset's identities (stage `train`, `facedata train recognizer`), and using
it (`facedata identify`).

Three modes, one model shape: a face's vector `z` (unit length) and one prototype per identity; a face's score
for an identity is the cosine of `z` and its prototype, and a face whose best score is under the model's
threshold is `unknown`.

- `head` (default): `z` is the stored embedding through an optional residual MLP; the prototypes are learnt
  with a CosFace / ArcFace margin on the frozen embeddings of the train split: minutes on a CPU.
- `finetune`: `z` comes from the dlib ResNet itself (`embed.dlib_resnet`), then the MLP; trained end to end on
  the aligned crops with augmentation: meant for a GPU.
- `centroid`: `z` is the stored embedding and each prototype the identity's mean: nothing is trained; the
  embedding model's own distance, the zero-training baseline.

Modules: `config` (settings from params), `data` (the dataset manifest as training arrays, review status as
sample weights), `heads` (the network), `losses` (margin losses), `loop` (deterministic, resumable training),
`evaluate` (top-1, open-set TAR at FAR, verification), `export` (state_dict, ONNX, loading), `card` (the
model card), `recognizer` (the whole run: what the stage and the command call), `identify` (faces in photos
to names).
"""
