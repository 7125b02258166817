"""2D photos to 3D faces.

- `regress`   3DMM regression (our MobileNet, 3DDFA_V2 mb05 weights): 62 parameters, 68 3D landmarks, head
              pose for every face, batched; crops refined from the landmarks, upright, flip-averaged.
- `dense`     the Surrey Face Model (read with eos-py) fitted to the landmarks in one or several views.
- `texture`   texture maps from the photos, merged across views by view angle.
- `gaze`      gaze direction from MediaPipe iris landmarks and the head pose.
- `meshio`    OBJ+MTL+PNG, GLB and landmark files; `render` offscreen pyrender pictures.
- `reconstruct`  the steps put together (used by stage `reconstruct3d` and `facedata face3d`).
- `evaluate`  AFLW2000-3D NME; `train` fine-tuning on pseudo-labels (`facedata train 3d`).

Quick use::

    from facedata.recon3d.reconstruct import Reconstructor
    rec = Reconstructor(params["recon3d"])          # params from params.yaml (or facedata.params defaults)
    results = rec.faces([rgb], [boxes])             # per photo, per box: status, fit, dense fit, gaze
    rec.write_face(results[0][0], "out/face0")      # mesh.obj/.mtl, texture.png, mesh.glb, landmarks68.xyz
"""
