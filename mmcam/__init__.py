"""mmcam: class activation maps for the tasks people really run."""
