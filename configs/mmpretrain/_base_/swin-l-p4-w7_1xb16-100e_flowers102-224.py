# Oxford Flowers-102: data/flowers102/{jpg/,imagelabels.mat,setid.mat} (the official files)
_base_ = './swin-l-p4-w7_1xb16-100e_cls-224.py'
num_classes = 102
model = dict(head=dict(num_classes=num_classes))
data_preprocessor = dict(num_classes=num_classes)
data_root = 'data/flowers102'
train_dataloader = dict(dataset=dict(type='Flowers102', data_root=data_root, split='train'))
val_dataloader = dict(dataset=dict(type='Flowers102', data_root=data_root, split='test'))
test_dataloader = val_dataloader
