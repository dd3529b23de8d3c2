"""The demo: ``python -m mesh.demo`` starts a three-process mesh and shows its traffic live."""
