//! Networks built from ops: the NSN / NDN / 3-D U-Net family.
