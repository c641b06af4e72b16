//! Segmentation and detection scores: IoU, Dice, SEG, MUCov, instance F1 and AP.
